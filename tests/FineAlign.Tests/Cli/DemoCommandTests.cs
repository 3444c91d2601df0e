using System.Text.Json;
using FineAlign.Evaluation;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Cli;

/// <summary>The README's main job in its 1-minute form: the whole pipeline, the report, determinism and restart.</summary>
[Collection("Serial torch RNG")]
public class DemoCommandTests
{
    private static readonly string[] Runs = ["sft", "ppo-seq", "ppo-tlcr", "dpo", "bco", "alol", "bon"];

    [Fact]
    public void QuickDemoWritesTheComparisonReportAndTheSameSeedGivesTheSameTable()
    {
        using var dir = TestPaths.NewTempDir();
        string a = Path.Combine(dir.Path, "a"), b = Path.Combine(dir.Path, "b");
        var (code, output, err) = CliRunner.Run("demo", "--quick", "--out", a, "--threads", "1");
        Assert.True(code == 0, err + output);

        // Every stage announced with its place and an ETA, then the table.
        for (int i = 1; i <= 13; i++) Assert.Contains($"== demo {i}/13: ", output);   // the tokenizer stage is the 13th
        Assert.Contains("left)", output);
        string report = Path.Combine(a, "report");
        foreach (var f in new[] { ComparisonReport.MarkdownFile, ComparisonReport.HtmlFile, ComparisonReport.StepPlotFile, ComparisonReport.KlPlotFile, ComparisonReport.JsonFile })
            Assert.True(File.Exists(Path.Combine(report, f)), f);
        string md = File.ReadAllText(Path.Combine(report, ComparisonReport.MarkdownFile));
        foreach (var run in Runs) Assert.Contains($"| {run} |", md);
        Assert.Contains("finealign demo --out " + a + " --seed 42 --quick --threads 1", md);   // the exact command
        Assert.Contains("finealign ppo --out ", md);                                              // and each stage's command

        // Curves: every trained method has the base point, checkpoints and the final model; best-of-n has one point per n.
        using var results = JsonDocument.Parse(File.ReadAllText(Path.Combine(report, ComparisonReport.JsonFile)));
        var byName = results.RootElement.GetProperty("runs").EnumerateArray().ToDictionary(r => r.GetProperty("name").GetString()!);
        Assert.Equal(Runs.Order(), byName.Keys.Order());
        Assert.True(byName["sft"].GetProperty("is_base").GetBoolean());
        Assert.Equal(0, byName["sft"].GetProperty("final").GetProperty("kl").GetDouble());
        foreach (var run in new[] { "ppo-seq", "ppo-tlcr", "dpo", "bco", "alol" })
            Assert.True(byName[run].GetProperty("curve").GetArrayLength() >= 3, run);
        Assert.Equal(3, byName["bon"].GetProperty("curve").GetArrayLength());
        Assert.True(Directory.EnumerateFiles(Path.Combine(a, "runs", "dpo", "runs"), "events.out.tfevents.*").Any(), "TensorBoard training logs");
        Assert.True(Directory.EnumerateFiles(Path.Combine(a, "runs", "dpo", "runs", "heldout"), "events.out.tfevents.*").Any(), "TensorBoard held-out curve");

        // A rerun into the same folder skips the finished stages and reproduces the table, also with another thread
        // count (a run-only flag: it must not delete and retrain finished stages).
        var (code2, output2, err2) = CliRunner.Run("demo", "--quick", "--out", a, "--threads", "2");
        Assert.True(code2 == 0, err2 + output2);
        Assert.Equal(12, output2.Split('\n').Count(l => l.Contains("same command); skipped")));
        Assert.Equal(Table(md), Table(File.ReadAllText(Path.Combine(report, ComparisonReport.MarkdownFile))));

        // A stage that reruns (here: A-LoL, as if interrupted) makes the stages after it rerun too (best-of-n), since
        // they were made from its old output; the stages before it stay. Same seed, same table.
        File.Delete(Path.Combine(a, "runs", "alol", RunEvaluation.InfoFileName));
        var (code2b, output2b, err2b) = CliRunner.Run("demo", "--quick", "--out", a, "--threads", "1");
        Assert.True(code2b == 0, err2b + output2b);
        Assert.Equal(10, output2b.Split('\n').Count(l => l.Contains("same command); skipped")));
        Assert.DoesNotContain("demo: bon already done", output2b);
        Assert.Equal(Table(md), Table(File.ReadAllText(Path.Combine(report, ComparisonReport.MarkdownFile))));

        // A fresh run with the same seed gives the same table.
        var (code3, output3, err3) = CliRunner.Run("demo", "--quick", "--out", b, "--threads", "1");
        Assert.True(code3 == 0, err3 + output3);
        Assert.Equal(Table(md), Table(File.ReadAllText(Path.Combine(b, "report", ComparisonReport.MarkdownFile))));

        // `finealign report` regenerates the page from the finished runs (cached evaluations, no --base needed).
        string again = Path.Combine(dir.Path, "again");
        var (code4, output4, err4) = CliRunner.Run(["report", .. Runs.Select(r => Path.Combine(a, "runs", r)), Path.Combine(a, "runs", "rm"), "--out", again]);
        Assert.True(code4 == 0, err4 + output4);
        Assert.Contains("skipped", err4);                                  // the reward model is not a policy
        Assert.Equal(Table(md), Table(File.ReadAllText(Path.Combine(again, ComparisonReport.MarkdownFile))));

        // A run that was never evaluated needs --base; with it, it is evaluated and cached.
        File.Delete(Path.Combine(a, "runs", "dpo", RunEvaluation.FileName));
        var (code5, _, err5) = CliRunner.Run("report", Path.Combine(a, "runs", "dpo"), "--out", again);
        Assert.Equal(1, code5);
        Assert.Contains("--base", err5);
        var (code6, output6, err6) = CliRunner.Run("report", Path.Combine(a, "runs", "sft"), Path.Combine(a, "runs", "dpo"), "--out", again,
            "--base", Path.Combine(a, "runs", "sft", "model"), "--eval-prompts", "8", "--eval-samples", "1", "--max-new-tokens", "16", "--eval-seed", "7819",
            "--corpus-size", "400", "--threads", "1");
        Assert.True(code6 == 0, err6 + output6);
        Assert.True(File.Exists(Path.Combine(a, "runs", "dpo", RunEvaluation.FileName)));
        string dpoRow = Table(md).Single(l => l.StartsWith("| dpo |", StringComparison.Ordinal));
        Assert.Contains(dpoRow, File.ReadAllText(Path.Combine(again, ComparisonReport.MarkdownFile)));   // same settings, same numbers
    }

    [Theory]
    [InlineData("finealign sft --out r --threads 1 --seed 42", "finealign sft --out r --threads 2 --seed 42", true)]
    [InlineData("finealign sft --out r --threads=1 --seed 42", "finealign sft --out r --seed 42", true)]
    [InlineData("finealign sft --out r --threads 1 --seed 42", "finealign sft --out r --threads 1 --seed 43", false)]
    [InlineData("finealign sft --out r --max-steps 10", "finealign sft --out r --max-steps 100", false)]
    public void StageCacheIgnoresOnlyRunOnlyFlags(string done, string now, bool same) =>
        Assert.Equal(same, FineAlign.Cli.Commands.DemoCommand.SameWork(done, now));

    [Fact]
    public void SeveralSeedsRunOnePipelinePerSeedAndReportMeanAndIntervalPerMethod()
    {
        using var dir = TestPaths.NewTempDir();
        string a = Path.Combine(dir.Path, "s");
        var (code, output, err) = CliRunner.Run("demo", "--quick", "--seeds", "2", "--out", a, "--threads", "1");
        Assert.True(code == 0, err + output);
        Assert.Contains("1 of 2 seeds", output);
        Assert.Contains("2 of 2 seeds", output);
        foreach (var s in new[] { 42, 43 })
            foreach (var run in Runs)
                Assert.True(File.Exists(Path.Combine(a, "runs", $"seed-{s}", run, RunEvaluation.FileName)), $"seed {s}: {run}");

        // One row per method (not per run), each the mean over the 2 seeds ± its 95 % interval.
        string md = File.ReadAllText(Path.Combine(a, "report", ComparisonReport.MarkdownFile));
        Assert.Contains("(mean ± 95 % CI)", md);
        Assert.Contains("--seeds 2", md);                                                       // the exact command
        foreach (var run in Runs) Assert.Single(Table(md), l => l.StartsWith($"| {run} |", StringComparison.Ordinal));
        Assert.Contains(Table(md), l => l.Contains("(n = 2)"));
        Assert.Contains("2 seeds (each a full pipeline", md);
    }

    private static List<string> Table(string markdown) => markdown.Split('\n').Where(l => l.StartsWith("| ", StringComparison.Ordinal) && l.Contains(" ± ")).ToList();
}
