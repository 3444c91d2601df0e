using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Evaluation;

/// <summary>Runs trained on the user's data: evaluated with the user's prompts and reward, never with the corpus's ground truth.</summary>
[Collection("Serial torch RNG")]
public class UserDataEvaluationTests
{
    private static (string Base, string Run, string Rm, string Prompts) Setup(string root)
    {
        string b = CommandFixtures.SaveByteModel(Path.Combine(root, "base"), seed: 11);
        string run = Path.Combine(root, "my-dpo");
        CommandFixtures.SaveByteModel(Path.Combine(run, "model"), seed: 12);
        string rm = Path.Combine(root, "rm");
        using (var trunk = ModelIO.Load(b))
        using (var scored = new ScoredLM(trunk, HeadKind.Sequence, 1, seed: 5))
            scored.Save(rm, new ByteTokenizer());
        string prompts = Path.Combine(root, "prompts.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"Q: what is 2+2?\\nA:\"}", "{\"prompt\": \"Hello\"}", "{\"prompt\": \"Tell me a story.\"}");
        return (b, run, rm, prompts);
    }

    [Fact]
    public void RmRewardSpec_FindsTheModelInARunFolder_AndNamesAMissingOne()
    {
        using var dir = TestPaths.NewTempDir();
        string b = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "base"), seed: 11);
        string run = Path.Combine(dir.Path, "rm-run");
        using (var trunk = ModelIO.Load(b))
        using (var scored = new ScoredLM(trunk, HeadKind.Sequence, 1, seed: 5))
            scored.Save(Path.Combine(run, "model"), new ByteTokenizer());
        // rm:RUN resolves to RUN/model as --model does; the scores are the ones of the model folder itself.
        var tok = new ByteTokenizer();
        using var ids = TorchSharp.torch.tensor(tok.Encode("there"), dtype: TorchSharp.torch.ScalarType.Int64).unsqueeze(0);
        using var mask = TorchSharp.torch.ones_like(ids, dtype: TorchSharp.torch.ScalarType.Float32);
        using var prompt = TorchSharp.torch.tensor(tok.Encode("Hello"), dtype: TorchSharp.torch.ScalarType.Int64).unsqueeze(0);
        var batch = new FineAlign.Rewards.RewardBatch(ids, mask, prompt, ["Hello"], ["there"]);
        float[] Scores(string spec)
        {
            using var r = FineAlign.Rewards.RewardSpecs.Build([spec], tok).Compute(batch);
            using var totals = r.SequenceTotals();
            return totals.data<float>().ToArray();
        }
        float[] direct = Scores("rm:" + Path.Combine(run, "model"));
        Assert.NotEqual(0f, direct[0]);
        Assert.Equal(direct, Scores("rm:" + run));
        var e = Assert.Throws<FineAlignException>(() => FineAlign.Rewards.RewardSpecs.Build(["rm:" + Path.Combine(dir.Path, "nope")], new ByteTokenizer()));
        Assert.StartsWith($"reward 'rm:{Path.Combine(dir.Path, "nope")}': ", e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void ReportOnANonCorpusRunNamesItsRewardAndShowsNoGroundTruth()
    {
        using var dir = TestPaths.NewTempDir();
        var (b, run, rm, prompts) = Setup(dir.Path);
        string rep = Path.Combine(dir.Path, "report");

        // The default reward is the built-in ground truth: refused for a run not trained on the built-in corpus.
        var (code0, _, err0) = CliRunner.Run("report", run, "--base", b, "--out", rep, "--threads", "1");
        Assert.Equal(1, code0);
        Assert.Contains("not marked as trained on the built-in corpus", err0);
        Assert.False(File.Exists(Path.Combine(run, RunEvaluation.FileName)));

        var (code, output, err) = CliRunner.Run("report", run, "--base", b, "--prompts", prompts, "--reward", "rm:" + rm,
            "--eval-prompts", "3", "--max-new-tokens", "6", "--out", rep, "--threads", "1");
        Assert.True(code == 0, err + output);
        string md = File.ReadAllText(Path.Combine(rep, ComparisonReport.MarkdownFile));
        Assert.Contains($"reward: **rm:{rm}**", md);
        string header = md.Split('\n').First(l => l.StartsWith("| run |", StringComparison.Ordinal));
        Assert.Contains($"| rm:{rm} ± s.e. |", header);
        Assert.Contains("base log-prob / token (ppl)", header);
        Assert.DoesNotContain("true reward", md);
        Assert.DoesNotContain("corpus words", md);
        Assert.DoesNotContain("well-formed", md);
        var cached = RunEvaluation.TryLoad(run)!;
        Assert.Equal("rm:" + rm, cached.Settings.Reward);
        Assert.Equal(prompts, cached.Settings.PromptsFile);
        Assert.Null(cached.Final.CorpusWordShare);
        Assert.True(cached.Final.BaseLogProb < 0);        // a log-probability of real tokens
        Assert.True(cached.Final.Kl != 0);                 // two different random models
    }

    [Fact]
    public void EvalPolicyPrintsRewardKlFluencyAndSamples()
    {
        using var dir = TestPaths.NewTempDir();
        var (b, run, rm, prompts) = Setup(dir.Path);
        string json = Path.Combine(dir.Path, "eval.json");
        var (code, output, err) = CliRunner.Run("eval-policy", "--model", run, "--base", b, "--prompts", prompts, "--reward", "rm:" + rm,
            "--max-new-tokens", "5", "--output", json, "--threads", "1");
        Assert.True(code == 0, err + output);
        Assert.Contains($"reward (rm:{rm}):", output);
        Assert.Contains("KL to base:", output);
        Assert.Contains("fluency proxy: base log-prob", output);
        Assert.Contains("distinct-1", output);
        Assert.DoesNotContain("corpus words", output);
        Assert.Contains("\"responses\"", File.ReadAllText(json));

        // The base against itself: KL exactly 0.
        var (code2, output2, _) = CliRunner.Run("eval-policy", "--model", b, "--base", b, "--prompts", prompts, "--reward", "rm:" + rm,
            "--max-new-tokens", "5", "--threads", "1");
        Assert.Equal(0, code2);
        Assert.Contains("KL to base: 0.000 nats", output2);

        var (code3, _, err3) = CliRunner.Run("eval-policy", "--model", run, "--base", b, "--reward", "rm:" + rm);
        Assert.Equal(2, code3);
        Assert.Contains("--prompts", err3);
    }
}

[Collection("Serial torch RNG")]
public class HeldOutEvalTests
{
    [Fact]
    public void MetricsComeEveryNStepsWithTheEvalPrefixAndZeroKlAgainstItself()
    {
        using var dir = TestPaths.NewTempDir();
        string b = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "base"), seed: 11);
        string prompts = Path.Combine(dir.Path, "p.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"Hi\"}", "{\"prompt\": \"Yes\"}");
        var tok = new ByteTokenizer();
        using var model = ModelIO.Load(b);
        var eval = HeldOutEval.FromFile(prompts, "lexicon", tok, everySteps: 5, maxNewTokens: 4, seed: 1);
        Assert.Empty(eval.MetricsAt(3, model, model));
        var m = eval.MetricsAt(10, model, model);
        foreach (var k in new[] { "eval/reward", "eval/kl", "eval/base_logprob_per_token", "eval/distinct_2", "eval/mean_length" })
            Assert.Contains(k, m.Keys);
        Assert.Equal(0, m["eval/kl"]);
        Assert.True(m["eval/base_logprob_per_token"] < 0);
        Assert.Equal(m, eval.MetricsAt(15, model, model));          // fixed prompts and seed: same policy, same numbers
    }
}
