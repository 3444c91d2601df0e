using System.Text.Json;
using FineAlign.Evaluation;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Imdb;

/// <summary><c>demo --task imdb --quick</c> end to end on the shared IMDB sample and AFINN lexicon, and imdb-prepare's bad-input errors.</summary>
[Collection("Serial torch RNG")]
public class ImdbDemoTests
{
    private static readonly string[] Runs = ["base", "ppo-seq", "ppo-tlcr", "ppo-discrete", "dpo", "bco", "alol", "bon"];

    [Fact]
    public void QuickImdbDemoWritesTheReportWithTheHeldOutJudgeAndRerunsFromCache()
    {
        string data = TestPaths.RequireShared("data/imdb/imdb-9k.jsonl"), afinn = TestPaths.RequireShared("data/afinn/AFINN-en-165.txt");
        using var dir = TestPaths.NewTempDir();
        string a = Path.Combine(dir.Path, "a");
        string[] args = ["demo", "--task", "imdb", "--quick", "--out", a, "--threads", "1", "--imdb-data", data, "--afinn", afinn];
        var (code, output, err) = CliRunner.Run(args);
        Assert.True(code == 0, err + output);

        string md = File.ReadAllText(Path.Combine(a, "report", ComparisonReport.MarkdownFile));
        foreach (var run in Runs) Assert.Contains($"| {run} |", md);
        foreach (var column in new[] { "judge ± s.e.", "| afinn |", "| real_words |", "| classifier |", "KL to base" }) Assert.Contains(column, md);
        Assert.Contains("finealign imdb-prepare --data ", md);          // the recipe: every stage as a plain command
        Assert.Contains("finealign rm --out ", md);

        using var results = JsonDocument.Parse(File.ReadAllText(Path.Combine(a, "report", ComparisonReport.JsonFile)));
        var byName = results.RootElement.GetProperty("runs").EnumerateArray().ToDictionary(r => r.GetProperty("name").GetString()!);
        Assert.Equal(Runs.Order(), byName.Keys.Order());
        Assert.True(byName["base"].GetProperty("is_base").GetBoolean());
        foreach (var run in Runs)
        {
            var metrics = byName[run].GetProperty("final").GetProperty("metrics");
            double words = metrics.GetProperty("real_words").GetDouble();
            Assert.InRange(words, 0, 1);
        }

        // The held-out judge's stages read only judge files (own tokenizer, own trunk, own labels) and are scored on the test part.
        string shared = Path.Combine(a, "runs");
        foreach (var stage in new[] { "judge-tokenizer", "judge-base", "judge" })
        {
            string command = RunEvaluation.ReadInfo(Path.Combine(shared, stage)).Command;
            Assert.DoesNotContain("train-text", command);
            Assert.DoesNotContain("classifier-train", command);
            Assert.DoesNotContain(Path.Combine(shared, "tokenizer"), command.Replace("judge-tokenizer", ""));
            Assert.DoesNotContain(Path.Combine(shared, "base"), command.Replace("judge-base", ""));
        }

        // A rerun skips every finished stage (6 shared + 13 per seed) and reproduces the table from the cached evaluations.
        var (code2, output2, err2) = CliRunner.Run(args);
        Assert.True(code2 == 0, err2 + output2);
        Assert.Equal(19, output2.Split('\n').Count(l => l.Contains("same command); skipped")));
        Assert.Equal(Table(md), Table(File.ReadAllText(Path.Combine(a, "report", ComparisonReport.MarkdownFile))));

        // A-LoL reruns (as if interrupted); best-of-n, in the later list of stages that need the judge, was made after
        // it and reruns too; the other 17 stay. Same seed, same table.
        File.Delete(Path.Combine(shared, "alol", RunEvaluation.InfoFileName));
        var (code3, output3, err3) = CliRunner.Run(args);
        Assert.True(code3 == 0, err3 + output3);
        Assert.Equal(17, output3.Split('\n').Count(l => l.Contains("same command); skipped")));
        Assert.DoesNotContain("demo: bon already done", output3);
        Assert.Equal(Table(md), Table(File.ReadAllText(Path.Combine(a, "report", ComparisonReport.MarkdownFile))));
    }

    // The results rows (not the timing table, whose evaluate line is 0 s on a rerun from cache).
    private static string Table(string md) => string.Join('\n', md.Split('\n').Where(l => Runs.Any(r => l.StartsWith($"| {r} | ", StringComparison.Ordinal))));

    [Theory]
    [InlineData("1", "with --seeds of at least 2")]      // one seed: nothing to run in parallel
    [InlineData("3", "must be 'shared' or one of the seeds of --seed 42 --seeds 3 (seeds 42–44")]
    [InlineData("45", "must be 'shared' or one of the seeds of --seed 42 --seeds 3 (seeds 42–44")]
    [InlineData("seed-43", "must be 'shared' or one of the seeds")]
    public void OnlySeedOutsideTheSeedsIsRefusedInOneLineBeforeAnyStage(string only, string says)
    {
        string data = TestPaths.RequireShared("data/imdb/imdb-9k.jsonl"), afinn = TestPaths.RequireShared("data/afinn/AFINN-en-165.txt");
        using var dir = TestPaths.NewTempDir();
        string outDir = Path.Combine(dir.Path, "out");
        var (code, output, err) = CliRunner.Run("demo", "--task", "imdb", "--quick", "--out", outDir, "--seed", "42", "--seeds", only == "1" ? "1" : "3",
            "--only-seed", only == "1" ? "42" : only, "--imdb-data", data, "--afinn", afinn);
        Assert.NotEqual(0, code);
        var lines = CliRunner.Lines(err);
        Assert.Single(lines);
        Assert.Contains(says, lines[0]);
        Assert.False(Directory.Exists(outDir), output);
    }

    [Theory]
    [InlineData("{\"text\": \"no label here\"}", "field 'label': missing")]
    [InlineData("{\"text\": \"a rating\", \"label\": 7}", "field 'label': expected 0 (negative) or 1 (positive), got number 7")]
    public void ImdbPrepareRejectsBadLabelsInOneLineAndWritesNothing(string badLine, string says)
    {
        using var dir = TestPaths.NewTempDir();
        string path = Path.Combine(dir.Path, "reviews.jsonl"), outDir = Path.Combine(dir.Path, "out");
        File.WriteAllLines(path, ["{\"text\": \"a good one\", \"label\": 1}", "{\"text\": \"a bad one\", \"label\": 0}", badLine]);
        var (code, output, err) = CliRunner.Run("imdb-prepare", "--data", path, "--out", outDir);
        Assert.NotEqual(0, code);
        var lines = CliRunner.Lines(err);
        Assert.Single(lines);
        Assert.Contains($"{path}:3: {says}", lines[0]);
        Assert.False(Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any(), output);
    }
}
