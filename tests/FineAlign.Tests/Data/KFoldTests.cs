using System.Text.Json;
using FineAlign.Data;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Data;

/// <summary>K-fold cross-validation (--folds/--fold/--fold-seed): a partition of the file's lines, seeded, disjoint per fold.</summary>
public class KFoldTests
{
    [Fact]
    public void FoldsPartitionTheLinesEvenlyAndDependOnlyOnTheSeed()
    {
        var a = KFold.Assign(103, 5, seed: 7);
        Assert.Equal(103, a.Length);
        Assert.All(a, f => Assert.InRange(f, 1, 5));
        var sizes = a.GroupBy(f => f).Select(g => g.Count()).ToArray();
        Assert.Equal(5, sizes.Length);
        Assert.True(sizes.Max() - sizes.Min() <= 1, string.Join(",", sizes));
        Assert.Equal(a, KFold.Assign(103, 5, seed: 7));
        Assert.NotEqual(a, KFold.Assign(103, 5, seed: 8));
        // shuffled, not blocks of consecutive lines
        Assert.NotEqual(Enumerable.Range(0, 103).Select(i => i * 5 / 103 + 1).ToArray(), a);
    }

    [Fact]
    public void AFoldsTestLinesAndTrainingLinesAreDisjointAndCoverTheFile()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Path.Combine(dir.Path, "lines.jsonl");
        File.WriteAllLines(path, Enumerable.Range(1, 40).Select(i => $"{{\"i\": {i}}}"));
        var items = Enumerable.Range(1, 40).Select(i => (long)i).Where(i => i != 13).ToList();  // line 13 "skipped" by a reader
        var testsSeen = new HashSet<long>();
        for (int k = 1; k <= 4; k++)
        {
            var (train, test) = KFold.Split(items, x => x, path, new FoldSpec(4, k, 3), "items");
            Assert.Empty(train.Intersect(test));
            Assert.Equal(items.Count, train.Count + test.Count);
            Assert.All(test, x => Assert.True(testsSeen.Add(x), $"line {x} in two test folds"));

            string tr = Path.Combine(dir.Path, $"train{k}"), te = Path.Combine(dir.Path, $"test{k}");
            var (nTrain, nTest) = KFold.WriteFiles(path, new FoldSpec(4, k, 3), tr, te);
            Assert.Equal(40, nTrain + nTest);
            var written = File.ReadLines(te).Select(l => (long)JsonDocument.Parse(l).RootElement.GetProperty("i").GetInt32()).ToList();
            Assert.Equal(test, written.Where(x => x != 13));
            Assert.Empty(File.ReadLines(tr).Intersect(File.ReadLines(te)));
        }
        Assert.Equal(items.Count, testsSeen.Count);
    }

    [Theory]
    [InlineData(null, 2, "--fold 2 needs --folds N")]
    [InlineData(5, null, "--folds 5 needs --fold K")]
    [InlineData(1, 1, "at least 2 folds")]
    [InlineData(5, 0, "--fold 0: must be between 1 and --folds 5")]
    [InlineData(5, 6, "--fold 6: must be between 1 and --folds 5")]
    public void BadFoldArgumentsAreOneClearError(int? folds, int? fold, string message)
    {
        var e = Assert.Throws<FineAlignException>(() => FoldSpec.From(folds, fold, 0));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void MoreFoldsThanLinesIsAnError()
    {
        var e = Assert.Throws<FineAlignException>(() => KFold.Assign(3, 5, 0));
        Assert.Contains("only 3 lines", e.Message);
    }
}

/// <summary>The fold options as a user runs them: folds, eval-pref and rm on the same partition; bad arguments one line.</summary>
[Collection("Serial torch RNG")]
public class KFoldCommandTests
{
    private static string Pairs(string dir, int n)
    {
        string path = Path.Combine(dir, "pairs.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, n).Select(i => JsonSerializer.Serialize(new
        {
            prompt = $"Item {i}:", chosen = i % 2 == 0 ? " good!" : " good, good!", rejected = " bad.",
        })));
        return path;
    }

    [Fact]
    public void FoldsCommandAndEvalPrefUseTheSamePartition()
    {
        using var dir = TestPaths.NewTempDir();
        string data = Pairs(dir.Path, 30), tr = Path.Combine(dir.Path, "tr.jsonl"), te = Path.Combine(dir.Path, "te.jsonl");
        var (code, stdout, stderr) = CliRunner.Run("folds", "--data", data, "--folds", "3", "--fold", "2", "--fold-seed", "4",
            "--train-out", tr, "--test-out", te);
        Assert.True(code == 0, stderr + stdout);
        Assert.Equal(20, File.ReadLines(tr).Count());
        Assert.Equal(10, File.ReadLines(te).Count());
        Assert.Equal(File.ReadLines(data).Order(), File.ReadLines(tr).Concat(File.ReadLines(te)).Order());

        string model = Path.Combine(dir.Path, "m");
        var tok = new FineAlign.Text.ByteTokenizer();
        using (var m = FineAlign.Models.ModelFactory.Create(FineAlign.Models.ModelPresets.Create("tiny", tok, 32), 1))
            FineAlign.Models.ModelIO.Save(m, model, tok);
        string json = Path.Combine(dir.Path, "acc.json");
        var (c2, o2, e2) = CliRunner.Run("eval-pref", "--model", model, "--data", data, "--folds", "3", "--fold", "2", "--fold-seed", "4",
            "--output", json);
        Assert.True(c2 == 0, e2 + o2);
        Assert.Contains("fold 2 of 3", o2);
        Assert.Contains("length-controlled", o2);
        var root = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
        Assert.Equal(10, root.GetProperty("pairs").GetInt32());
        Assert.True(root.TryGetProperty("length_balanced_accuracy", out _));
    }

    [Fact]
    public void RmTrainsOnTheOtherFoldsAndHoldsOutFoldK()
    {
        using var dir = TestPaths.NewTempDir();
        string data = Pairs(dir.Path, 30), run = Path.Combine(dir.Path, "rm");
        var (code, stdout, stderr) = CliRunner.Run("rm", "--data", data, "--folds", "5", "--fold", "1", "--init", "tiny", "--context-length", "32",
            "--out", run, "--max-steps", "2", "--batch-size", "4", "--threads", "1", "--eval-steps", "2", "--save-steps", "2");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("24 pairs (", stdout);
        Assert.Contains("6 held out", stdout);
    }

    [Fact]
    public void FoldsWithoutADataFileAreAnErrorNotIgnored()
    {
        using var dir = TestPaths.NewTempDir();
        string run = Path.Combine(dir.Path, "rm");
        var (code, stdout, stderr) = CliRunner.Run("rm", "--init", "tiny", "--context-length", "32", "--out", run, "--max-steps", "1",
            "--threads", "1", "--folds", "5", "--fold", "1");
        Assert.Equal(1, code);
        Assert.Single(CliRunner.Lines(stderr));
        Assert.Contains("--folds/--fold split a --data file", stderr);
        Assert.False(Directory.Exists(run), stdout);
    }

    [Theory]
    [InlineData("--fold", "6", "--folds", "5")]
    [InlineData("--fold", "1")]
    [InlineData("--folds", "5", "--fold", "1", "--holdout-last", "3")]
    public void BadFoldArgumentsGiveOneLineAndNoOutput(params string[] extra)
    {
        using var dir = TestPaths.NewTempDir();
        string data = Pairs(dir.Path, 30), run = Path.Combine(dir.Path, "rm");
        var (code, stdout, stderr) = CliRunner.Run(["rm", "--data", data, "--init", "tiny", "--context-length", "32", "--out", run,
            "--max-steps", "1", "--threads", "1", .. extra]);
        Assert.Equal(1, code);
        Assert.Single(CliRunner.Lines(stderr));
        Assert.Contains("--fold", stderr);
        Assert.False(Directory.Exists(run), stdout);
    }
}
