using System.Text.Json;
using FineAlign.Data.Corpus;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Corpus;

public class ReviewCorpusTests
{
    [Fact]
    public void Same_seed_same_text_different_seed_different_and_prefix_stable()
    {
        var a = ReviewCorpus.Generate(7, 300).Select(r => r.Text).ToArray();
        var b = ReviewCorpus.Generate(7, 300).Select(r => r.Text).ToArray();
        var c = ReviewCorpus.Generate(8, 300).Select(r => r.Text).ToArray();
        var prefix = ReviewCorpus.Generate(7, 40).Select(r => r.Text);
        Assert.Equal(a, b);
        Assert.True(a.Zip(c).Count(p => p.First != p.Second) > 250);
        Assert.Equal(a.Take(40), prefix);
        Assert.True(a.Distinct().Count() > 290, "reviews should rarely repeat");
    }

    [Fact]
    public void Known_first_review_for_seed_1234_pins_the_generator()
    {
        // Guards cross-platform/runtime determinism: a change here changes every corpus ever written.
        var r = ReviewCorpus.GenerateOne(1234, 0);
        Assert.Equal("I had high hopes for this sequel, and it was atrocious. I despised the scenes. I found the premise mediocre. 2 stars out of 5.", r.Text);
        Assert.Equal(2, r.Stars);
    }

    [Fact]
    public void Every_word_is_in_the_lexicon_and_spans_and_valences_are_consistent()
    {
        foreach (var r in ReviewCorpus.Generate(3, 500))
        {
            Assert.Equal(r.Text, r.Prompt + r.Completion);
            Assert.StartsWith(" ", r.Completion);
            Assert.InRange(r.Stars, 1, 5);
            Assert.InRange(r.Text.Length, 60, 400);
            Assert.InRange(r.Text.Count(ch => ch is '.' or '!'), 4, 6);   // opening (1-2) + 2-3 body + rating
            Assert.True(r.Words.Count > 10);
            int previousEnd = 0;
            foreach (var w in r.Words)
            {
                Assert.True(w.Start >= previousEnd);
                previousEnd = w.End;
                Assert.Equal(w.Word, r.Text.Substring(w.Start, w.Length).ToLowerInvariant());
                Assert.True(w.Known, $"'{w.Word}' is not in the lexicon: {r.Text}");
                Assert.Equal(Lexicon.Valence(w.Word), w.LexiconValence);
                // Modifiers scale by a positive factor, so only negation can change the sign.
                Assert.Equal(Math.Sign(w.LexiconValence) * (w.Negated ? -1 : 1), Math.Sign(w.Valence));
            }
            // The prompt holds no sentiment: the model must produce all of it.
            Assert.All(r.Words.Where(w => w.Start < r.Prompt.Length), w => Assert.False(w.IsValenced));
            Assert.Equal(r.Words.Where(w => w.IsValenced).Sum(w => w.Valence), Lexicon.Score(r.Text).Sum, 1e-5f);
        }
    }

    [Fact]
    public void Sentiment_of_generated_reviews_follows_the_star_label()
    {
        var reviews = ReviewCorpus.Generate(11, 3000);
        double[] stars = reviews.Select(r => (double)r.Stars).ToArray();
        double[] reward = reviews.Select(r => (double)r.TrueReward).ToArray();
        Assert.True(Pearson(stars, reward) > 0.8, $"correlation {Pearson(stars, reward)}");
        var means = Enumerable.Range(1, 5).Select(s => reviews.Where(r => r.Stars == s).Average(r => r.TrueReward)).ToArray();
        for (int s = 1; s < 5; s++) Assert.True(means[s] > means[s - 1] + 0.1, string.Join(", ", means));
        // Negation and modifiers really occur, so a model has to learn them.
        Assert.True(reviews.Count(r => r.Words.Any(w => w.Negated)) > 300);
        Assert.True(reviews.Count(r => r.Text.Contains(" very ", StringComparison.Ordinal)) > 50);
        // Contrast sentences: some words disagree with the label.
        Assert.True(reviews.Count(r => r.Stars == 5 && r.Words.Any(w => w.Valence < -0.2)) > 50);
    }

    [Fact]
    public void Revisions_move_true_reward_toward_the_target()
    {
        int changed = 0;
        foreach (var r in ReviewCorpus.Generate(5, 400))
        {
            var up = ReviewCorpus.Revise(r, towardPositive: true);
            var down = ReviewCorpus.Revise(r, towardPositive: false);
            Assert.Equal(r.Prompt, up.Revised.Prompt);
            Assert.StartsWith(r.Prompt, up.Revised.Text, StringComparison.Ordinal);
            if (up.ChangedWords > 0)
            {
                changed++;
                Assert.True(up.Revised.TrueReward > r.TrueReward, $"{r.Text} -> {up.Revised.Text}");
                Assert.DoesNotContain(up.Revised.Words, w => w.IsValenced && w.Valence < 0 && Lexicon.Find(w.Word)!.Antonym is not null);
            }
            else Assert.Equal(r.Text, up.Revised.Text);
            if (down.ChangedWords > 0) Assert.True(down.Revised.TrueReward < r.TrueReward);
            Assert.Equal(r.Words.Count, up.Revised.Words.Count);     // word-for-word edit: token labels align
        }
        Assert.True(changed > 150);
    }

    [Theory]
    [InlineData("What an awful film it was!", "What a brilliant film it was!")]
    [InlineData("Awful. The plot was not good.", "Brilliant. The plot was not bad.")]
    [InlineData("It was a mess, sadly.", "It was a gem, thankfully.")]
    [InlineData("I hated it but loved the music.", "I loved it but loved the music.")]
    public void Revise_swaps_antonyms_and_fixes_articles_and_case(string original, string expected)
    {
        var review = new Review(0, 3, original, "", Lexicon.Annotate(original));
        var pair = ReviewCorpus.Revise(review, towardPositive: true);
        Assert.Equal(expected, pair.Revised.Text);
        Assert.True(pair.Revised.TrueReward > review.TrueReward);
    }

    [Fact]
    public void Prompt_splits_are_disjoint_and_depend_on_seed()
    {
        var (train, eval) = ReviewCorpus.Prompts(21, 4000);
        Assert.NotEmpty(eval);
        Assert.True(train.Count > 5 * eval.Count);
        Assert.Empty(train.Intersect(eval));
        Assert.Equal(train.Count, train.Distinct().Count());
        Assert.All(eval, p => Assert.True(ReviewCorpus.IsEvalPrompt(p, 21)));
        Assert.All(train, p => Assert.False(ReviewCorpus.IsEvalPrompt(p, 21)));
        var (_, eval2) = ReviewCorpus.Prompts(22, 4000);
        Assert.NotEqual(eval.OrderBy(x => x, StringComparer.Ordinal), eval2.OrderBy(x => x, StringComparer.Ordinal));
        Assert.True(ReviewCorpus.IsEvalPrompt("The movie was", 1, 1.0));
        Assert.False(ReviewCorpus.IsEvalPrompt("The movie was", 1, 0.0));
    }

    [Fact]
    public void Export_is_byte_identical_and_splits_are_consistent()
    {
        using var d1 = TestPaths.NewTempDir();
        using var d2 = TestPaths.NewTempDir();
        var s1 = CorpusExport.WriteAll(d1.Path, 9, 600);
        CorpusExport.WriteAll(d2.Path, 9, 600);
        foreach (var f in CorpusExport.FileNames)
            Assert.Equal(File.ReadAllBytes(Path.Combine(d1.Path, f)), File.ReadAllBytes(Path.Combine(d2.Path, f)));

        var lines = File.ReadAllLines(Path.Combine(d1.Path, "pretrain.txt"));
        Assert.Equal(600, lines.Length);
        Assert.Equal(ReviewCorpus.Generate(9, 600).Select(r => r.Text), lines);
        var sft = ReadJsonl(d1.Path, "sft_train.jsonl").Concat(ReadJsonl(d1.Path, "sft_eval.jsonl"))
            .Select(j => j.GetProperty("prompt").GetString() + j.GetProperty("completion").GetString()).ToHashSet();
        Assert.True(sft.SetEquals(lines));
        var evalPrompts = ReadJsonl(d1.Path, "prompts_eval.jsonl").Select(j => j.GetProperty("prompt").GetString()).ToHashSet();
        Assert.Equal(s1.PromptsEval, evalPrompts.Count);
        Assert.All(ReadJsonl(d1.Path, "sft_eval.jsonl"), j => Assert.Contains(j.GetProperty("prompt").GetString(), evalPrompts));
        Assert.All(ReadJsonl(d1.Path, "sft_train.jsonl"), j => Assert.DoesNotContain(j.GetProperty("prompt").GetString(), evalPrompts));
        var review0 = ReadJsonl(d1.Path, "reviews.jsonl").First();
        string text = review0.GetProperty("text").GetString()!;
        foreach (var w in review0.GetProperty("words").EnumerateArray())
            Assert.Equal(w.GetProperty("word").GetString(),
                text.Substring(w.GetProperty("start").GetInt32(), w.GetProperty("length").GetInt32()).ToLowerInvariant());
        foreach (var p in ReadJsonl(d1.Path, "preferences_train.jsonl").Take(50))
        {
            string prompt = p.GetProperty("prompt").GetString()!;
            Assert.True(Lexicon.TrueReward(prompt + p.GetProperty("chosen").GetString()) >
                        Lexicon.TrueReward(prompt + p.GetProperty("rejected").GetString()));
        }
        Assert.DoesNotContain((byte)'\r', File.ReadAllBytes(Path.Combine(d1.Path, "pretrain.txt")));
    }

    [Fact]
    public void Twenty_thousand_reviews_are_generated_in_full()
    {
        // The demo's size. Its speed is measured by the bench (`--workload corpus`), not by a wall-clock limit here,
        // which failed under load without anything being wrong.
        var reviews = ReviewCorpus.Generate(1, 20_000);
        Assert.Equal(20_000, reviews.Count);
        Assert.All(reviews, r => Assert.False(string.IsNullOrWhiteSpace(r.Text)));
    }

    private static IEnumerable<JsonElement> ReadJsonl(string dir, string file) =>
        File.ReadLines(Path.Combine(dir, file)).Select(l => JsonDocument.Parse(l).RootElement.Clone());

    private static double Pearson(double[] x, double[] y)
    {
        double mx = x.Average(), my = y.Average(), sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < x.Length; i++)
        {
            sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) * (x[i] - mx); syy += (y[i] - my) * (y[i] - my);
        }
        return sxy / Math.Sqrt(sxx * syy);
    }
}
