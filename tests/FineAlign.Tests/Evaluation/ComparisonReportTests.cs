using FineAlign.Trainers;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Evaluation;

public class ComparisonReportTests
{
    private static readonly EvalSettings Settings = new(8, 1, 16, 7, 400, 1234, "runs/sft/model");

    private static RunEvaluation Run(string name, double reward, double kl, bool isBase = false, bool analytic = false, string xAxis = "step") => new()
    {
        Name = name, Method = name.ToUpperInvariant(), Signal = "sig", IsBase = isBase, AnalyticKl = analytic, XAxis = xAxis, Settings = Settings,
        Curve = [new EvalPoint(0, 0.1, 0.01, 0, 0.5, 0.8, 30), new EvalPoint(10, reward, 0.02, kl, 0.4, 0.7, 31)],
        Samples = [new EvalSample("The food was", $" {name} <b>great</b>", reward)],
    };

    [Fact]
    public void StandardErrorIsTheSampleStandardDeviationOverRootN()
    {
        // values 1,2,3,4: mean 2.5, unbiased variance (2.25+0.25+0.25+2.25)/3 = 5/3, s.e. = sqrt(5/3/4) = 0.645497
        Assert.Equal(0.645497, EvalPoint.StandardError([1, 2, 3, 4]), 5);
        Assert.Equal(0, EvalPoint.StandardError([3]));
    }

    [Fact]
    public void TableMeasuresDeltaAgainstTheBaseRowAndMarksTheBestOfNBound()
    {
        var runs = new[] { Run("sft", 0.100, 0, isBase: true), Run("dpo", 0.350, 2.5), Run("bon", 0.300, Math.Log(4) - 0.75, analytic: true, xAxis: "n") };
        var rows = ComparisonReport.TableRows(runs);
        Assert.Equal(4, rows.Count);
        Assert.Equal("—", rows[1][4]);                 // the base has no Δ
        Assert.Equal("0", rows[1][5]);
        Assert.Equal("+0.250", rows[2][4]);            // 0.350 − 0.100
        Assert.Equal("2.50", rows[2][5]);
        Assert.Equal("0.350 ± 0.020", rows[2][3]);
        Assert.Equal("0.64 (bound)", rows[3][5]);      // log 4 − 3/4 = 0.636
        Assert.Equal("+0.200", rows[3][4]);
    }

    [Fact]
    public void ReportIsWrittenAsMarkdownAndSelfContainedHtml()
    {
        using var dir = TestPaths.NewTempDir();
        var runs = new[] { Run("sft", 0.1, 0, isBase: true), Run("ppo", 0.4, 3.0) };
        string md = ComparisonReport.Write(runs, dir.Path, new ReportContext { Title = "T", ReproduceCommand = "finealign demo --seed 1", Commands = ["finealign sft --seed 1"] });
        string text = File.ReadAllText(md);
        Assert.Contains("| ppo | PPO | sig | 0.400 ± 0.020 | +0.300 | 3.00 |", text);
        Assert.Contains("finealign demo --seed 1", text);
        Assert.Contains("finealign sft --seed 1", text);
        foreach (var png in new[] { ComparisonReport.StepPlotFile, ComparisonReport.KlPlotFile })
            Assert.True(new FileInfo(Path.Combine(dir.Path, png)).Length > 1000, png);
        string html = File.ReadAllText(Path.Combine(dir.Path, ComparisonReport.HtmlFile));
        Assert.Equal(2, CountOf(html, "src=\"data:image/png;base64,"));   // plots inlined: one file to send around
        Assert.DoesNotContain("src=\"http", html);
        Assert.Contains("&lt;b&gt;great&lt;/b&gt;", html);                 // sample text escaped, not rendered
        Assert.True(File.Exists(Path.Combine(dir.Path, ComparisonReport.JsonFile)));
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    [Fact]
    public void RunsEvaluatedDifferentlyAreRefused()
    {
        using var dir = TestPaths.NewTempDir();
        var other = Run("dpo", 0.3, 1) with { Settings = Settings with { Prompts = 16 } };
        var ex = Assert.Throws<FineAlignException>(() => ComparisonReport.Write([Run("sft", 0.1, 0, isBase: true), other], dir.Path, new ReportContext()));
        Assert.Contains("other settings", ex.Message);
    }

    [Fact]
    public void SnapshotsAreCheckpointPoliciesThenTheFinalModelAndScoredModelsAreNotPolicies()
    {
        using var dir = TestPaths.NewTempDir();
        void Config(string folder, string arch)
        {
            Directory.CreateDirectory(folder);
            File.WriteAllText(Path.Combine(folder, "config.json"), $"{{\"architectures\": [\"{arch}\"]}}");
        }
        string run = Path.Combine(dir.Path, "ppo");
        foreach (int step in new[] { 2, 4, 6 })
        {
            string ck = Path.Combine(run, $"checkpoint-{step}");
            Config(Path.Combine(ck, "policy"), "LlamaForCausalLM");
            File.WriteAllText(Path.Combine(ck, "trainer_state.json"), "{}");
        }
        Directory.CreateDirectory(Path.Combine(run, ".tmp-checkpoint-8"));   // unfinished: ignored
        Config(Path.Combine(run, "policy"), "LlamaForCausalLM");
        var snaps = RunEvaluator.Snapshots(run);
        Assert.Equal([2L, 4L, 6L], snaps.Select(s => s.Step));
        Assert.Equal(Path.Combine(run, "policy"), snaps[^1].Folder);     // the final folder stands for the last step

        string rm = Path.Combine(dir.Path, "rm");
        Config(Path.Combine(rm, "model"), "LlamaForSequenceClassification");
        Assert.Null(RunEvaluator.PolicyFolder(rm));
        Assert.Empty(RunEvaluator.Snapshots(rm));
    }

    [Fact]
    public void BestOfNWithTheTrueRewardNeverGetsWorseAsNGrows()
    {
        // Ranking by the ground truth itself: the best of the first 4 candidates is at least the best of the first 2.
        var tok = new ByteTokenizer();
        using var model = ModelFactory.Create(ModelPresets.Create("tiny", tok, 64), 3);
        var eval = RunEvaluator.BestOfNCurve("bon", model, tok, RewardSpecs.Lexicon(), Settings, EvalReward.CorpusTruth(), [1, 2, 4]);
        Assert.Equal([1.0, 2.0, 4.0], eval.Curve.Select(p => p.X));
        Assert.True(eval.Curve[1].Reward >= eval.Curve[0].Reward && eval.Curve[2].Reward >= eval.Curve[1].Reward,
            string.Join(", ", eval.Curve.Select(p => p.Reward)));
        Assert.Equal(0, eval.Curve[0].Kl);
        Assert.Equal(Math.Log(4) - 0.75, eval.Curve[2].Kl, 12);
        Assert.True(eval.AnalyticKl);
        Assert.NotEmpty(eval.Samples);
    }

    private static int CountOf(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + 1, StringComparison.Ordinal)) n++;
        return n;
    }
}
