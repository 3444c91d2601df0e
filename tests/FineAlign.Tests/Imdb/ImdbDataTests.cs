using System.Text.Json;
using FineAlign.Data;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Imdb;

/// <summary>The IMDB task's data stage: reading with one-line errors, the split by review, prefixes, and the written files.</summary>
public class ImdbDataTests
{
    private static List<LabelledReview> Reviews(int n, int duplicates = 0)
    {
        var list = Enumerable.Range(0, n).Select(i => new LabelledReview(i + 1, $"Review number {i} says the film was {(i % 2 == 0 ? "good" : "bad")} indeed.", i % 2 == 0)).ToList();
        // Duplicated texts (the 9k sample has 18): they must land in one part.
        for (int d = 0; d < duplicates; d++) list.Add(new LabelledReview(n + d + 1, list[d].Text, list[d].Positive));
        return list;
    }

    [Fact]
    public void SplitIsDisjointByReviewCoversEveryLineAndIsFixedBySeed()
    {
        var reviews = Reviews(200, duplicates: 10);
        var a = ImdbSplitter.Split(reviews, seed: 7);
        var parts = new[] { a.Train, a.Validation, a.Test, a.Judge };
        // Every line in exactly one part.
        Assert.Equal(reviews.Select(r => r.Line).Order(), parts.SelectMany(p => p.Select(r => r.Line)).Order());
        // No text in two parts (duplicates travel together).
        for (int i = 0; i < parts.Length; i++)
            for (int j = i + 1; j < parts.Length; j++)
                Assert.Empty(parts[i].Select(r => r.Text).Intersect(parts[j].Select(r => r.Text)));
        // Sizes follow the fractions (of 200 distinct texts): judge 25 %, test 15 %, validation 5 %.
        Assert.Equal(50, a.Judge.Select(r => r.Text).Distinct().Count());
        Assert.Equal(30, a.Test.Select(r => r.Text).Distinct().Count());
        Assert.Equal(10, a.Validation.Select(r => r.Text).Distinct().Count());

        var again = ImdbSplitter.Split(reviews, seed: 7);
        Assert.Equal(a.Train.Select(r => r.Line), again.Train.Select(r => r.Line));
        Assert.Equal(a.Judge.Select(r => r.Line), again.Judge.Select(r => r.Line));
        var other = ImdbSplitter.Split(reviews, seed: 8);
        Assert.NotEqual(a.Judge.Select(r => r.Line), other.Judge.Select(r => r.Line));
    }

    [Fact]
    public void PrefixKeepsWholeWordsAndTheContinuationStartsWithItsSpace()
    {
        var (p, c) = ReviewPrefix.Cut("The movie was great  fun, really.", 3);
        Assert.Equal("The movie was", p);
        Assert.Equal(" great  fun, really.", c);
        // A review shorter than the prefix keeps one word to continue.
        Assert.Equal(("Too", " short"), ReviewPrefix.Cut("Too short", 5));
        Assert.Equal(" great  fun,", ReviewPrefix.FirstWords(c, 2));
        Assert.Equal(ReviewPrefix.Length(42, 17, 3, 8), ReviewPrefix.Length(42, 17, 3, 8));
        Assert.All(Enumerable.Range(0, 100), i => Assert.InRange(ReviewPrefix.Length(42, i, 3, 8), 3, 8));
    }

    [Theory]
    [InlineData("{\"text\": \"fine film\"}", "label", "missing")]
    [InlineData("{\"text\": \"fine film\", \"label\": 2}", "label", "got number 2")]
    [InlineData("{\"text\": \"fine film\", \"label\": \"1\"}", "label", "got string")]
    [InlineData("{\"text\": \"fine film\", \"label\": true}", "label", "expected 0 (negative) or 1 (positive)")]
    [InlineData("{\"label\": 1}", "text", "")]
    public void BadLabelsAndMissingFieldsNameFileLineAndField(string badLine, string field, string says)
    {
        using var dir = TestPaths.NewTempDir();
        string path = Path.Combine(dir.Path, "reviews.jsonl");
        File.WriteAllLines(path, ["{\"text\": \"a good one\", \"label\": 1}", badLine]);
        var e = Assert.Throws<DataFormatException>(() => ImdbReader.Read(path));
        Assert.Equal(path, e.File);
        Assert.Equal(2, e.Line);
        Assert.Equal(field, e.Field);
        Assert.Contains(says, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void TaskFilesKeepTheJudgePartToTheJudgeFiles()
    {
        using var dir = TestPaths.NewTempDir();
        string src = Path.Combine(dir.Path, "reviews.jsonl");
        File.WriteAllLines(src, Reviews(120).Select(r => JsonSerializer.Serialize(new { text = r.Text, label = r.Positive ? 1 : 0 })));
        var m = ImdbTaskFiles.Write(src, Path.Combine(dir.Path, "data"), new ImdbTaskOptions { Seed = 3, ContinuationWords = 50 },
            (text, positive) => [(0, 1, positive ? 1 : -1)]);
        var judgeTexts = m.Split.Judge.Select(r => r.Text).ToHashSet();
        var trainTexts = m.Split.Train.Select(r => r.Text).ToHashSet();
        string Whole(JsonElement e) => e.TryGetProperty("text", out var t) ? t.GetString()!
            : e.GetProperty("prompt").GetString() + (e.TryGetProperty("completion", out var c) ? c.GetString() : e.TryGetProperty("response", out var rsp) ? rsp.GetString() : "");
        foreach (var (name, path) in m.Files.Where(f => f.Key != "split"))
        {
            var texts = File.ReadAllLines(path).Select(l => Whole(JsonDocument.Parse(l).RootElement)).ToList();
            Assert.NotEmpty(texts);
            if (name.StartsWith("judge", StringComparison.Ordinal))
            {
                // The judge trains on judge reviews only: no training review's text.
                Assert.All(texts, t => Assert.Contains(t, judgeTexts));
                Assert.DoesNotContain(texts, trainTexts.Contains);
            }
            else if (!name.StartsWith("prompts", StringComparison.Ordinal))   // prompts are prefixes: checked through the other files
                Assert.DoesNotContain(texts, judgeTexts.Contains);
        }
        // The classifier's file: prefix + continuation + the review's label as a boolean; spans as given.
        var first = JsonDocument.Parse(File.ReadLines(m.Files["classifier-train"]).First()).RootElement;
        var review = m.Split.Train[0];
        Assert.Equal(review.Text, first.GetProperty("prompt").GetString() + first.GetProperty("completion").GetString());
        Assert.Equal(review.Positive, first.GetProperty("label").GetBoolean());
        var span = JsonDocument.Parse(File.ReadLines(m.Files["tlcr-train"]).First()).RootElement.GetProperty("spans")[0];
        Assert.Equal(review.Positive ? 1 : -1, span.GetProperty("label").GetInt32());
        // split.json lists the same lines.
        using var split = JsonDocument.Parse(File.ReadAllText(m.Files["split"]));
        Assert.Equal(m.Split.Judge.Select(r => r.Line), split.RootElement.GetProperty("judge").EnumerateArray().Select(x => x.GetInt64()));
    }
}
