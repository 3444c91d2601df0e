using System.Text.Json;
using FineAlign.Data;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Training;

namespace FineAlign.Tests.Preferences;

/// <summary>rm, dpo, kto, bco, eval-rm and eval-pref as a user runs them, on a tiny model and a learnable toy preference.</summary>
[Collection("Serial torch RNG")]
public class PreferenceCommandTests
{
    // The preference is learnable from the completion alone: " good!" is always chosen over " bad.".
    private static string ToyPairs(string dir, int n = 48, int offset = 0)
    {
        string path = Path.Combine(dir, $"pairs{offset}.jsonl");
        File.WriteAllLines(path, Enumerable.Range(offset, n).Select(i => JsonSerializer.Serialize(new
        {
            prompt = $"Item {i}:", chosen = i % 2 == 0 ? " good!" : " good, good!", rejected = i % 3 == 0 ? " bad." : " bad, bad.",
        })));
        return path;
    }

    private static string TinyModel(string dir)
    {
        string folder = Path.Combine(dir, "sft");
        var tok = new ByteTokenizer();
        using var model = ModelFactory.Create(ModelPresets.Create("tiny", tok, 48), 3);
        ModelIO.Save(model, folder, tok);
        return folder;
    }

    private static string[] Train(string command, string outDir, params string[] extra) =>
    [
        command, "--out", outDir, "--batch-size", "8", "--eval-batch-size", "16", "--max-steps", "12", "--save-steps", "6",
        "--eval-steps", "12", "--logging-steps", "1", "--seed", "5", "--threads", "1", "--warmup-ratio", "0", .. extra,
    ];

    private static List<Dictionary<string, double>> Metrics(string run) => MetricsLogger.Read(Path.Combine(run, MetricsLogger.JsonlFile));

    [Fact]
    public void RewardModelLearnsThePreferenceAndLoadsAsSequenceClassifier()
    {
        using var dir = TestPaths.NewTempDir();
        string data = ToyPairs(dir.Path), heldOut = ToyPairs(dir.Path, 16, 1000), run = Path.Combine(dir.Path, "rm");
        var (code, stdout, stderr) = CliRunner.Run(Train("rm", run, "--data", data, "--eval-data", heldOut, "--init", "tiny",
            "--context-length", "48", "--learning-rate", "3e-3", "--center-rewards-coefficient", "0.01"));
        Assert.True(code == 0, stderr + stdout);
        var m = Metrics(run);
        Assert.Contains(m, e => e.ContainsKey("accuracy") && e.ContainsKey("margin"));
        Assert.True(m.Last(e => e.ContainsKey("eval/accuracy"))["eval/accuracy"] > 0.9, stdout);

        using var rm = ScoredLM.Load(Path.Combine(run, "model"));
        Assert.Equal(HeadKind.Sequence, rm.Kind);
        var (evalCode, evalOut, evalErr) = CliRunner.Run("eval-rm", "--model", Path.Combine(run, "model"), "--data", heldOut,
            "--output", Path.Combine(dir.Path, "acc.json"));
        Assert.True(evalCode == 0, evalErr);
        Assert.Contains("chance 50%", evalOut);
        double acc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Path, "acc.json"))).RootElement.GetProperty("accuracy").GetDouble();
        Assert.True(acc > 0.9, evalOut);
    }

    [Fact]
    public void DpoRaisesHeldOutImplicitRewardAccuracyAndPrecomputedReferenceMatchesLive()
    {
        using var dir = TestPaths.NewTempDir();
        string sft = TinyModel(dir.Path), data = ToyPairs(dir.Path), heldOut = ToyPairs(dir.Path, 16, 1000);
        string live = Path.Combine(dir.Path, "live"), pre = Path.Combine(dir.Path, "pre");
        string[] common = ["--model", sft, "--data", data, "--eval-data", heldOut, "--learning-rate", "3e-3", "--beta", "0.5"];
        var (code, stdout, stderr) = CliRunner.Run(Train("dpo", live, common));
        Assert.True(code == 0, stderr + stdout);
        var (code2, stdout2, stderr2) = CliRunner.Run(Train("dpo", pre, [.. common, "--precompute-ref-log-probs"]));
        Assert.True(code2 == 0, stderr2 + stdout2);
        Assert.Contains("computed and cached", stdout2);
        Assert.True(File.Exists(Path.Combine(pre, "reference_logps_train.json")));

        var m = Metrics(live);
        foreach (var key in new[] { "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected" })
            Assert.Contains(m, e => e.ContainsKey(key));
        var lastEval = m.Last(e => e.ContainsKey("eval/rewards/accuracies"));
        Assert.True(lastEval["eval/rewards/accuracies"] > 0.9 && lastEval["eval/rewards/margins"] > 0, stdout);

        // Same losses with the reference scored live or precomputed (different padding: float rounding only).
        double[] Losses(string run) => Metrics(run).Where(e => e.ContainsKey("loss")).Select(e => e["loss"]).ToArray();
        var a = Losses(live);
        var b = Losses(pre);
        Assert.Equal(a.Length, b.Length);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) < 1e-4, $"step {i + 1}: {a[i]} vs {b[i]}");

        // eval-pref: the untrained model ties with itself (0%), the DPO output beats chance on held-out pairs.
        var (c3, o3, e3) = CliRunner.Run("eval-pref", "--model", Path.Combine(live, "model"), "--ref-model", sft, "--data", heldOut, "--beta", "0.5");
        Assert.True(c3 == 0, e3);
        var pairs = PreferenceDataset.Load(heldOut, new ByteTokenizer(), new PreferenceEncoding { MaxLength = 48 });
        using var policy = ModelIO.Load(Path.Combine(live, "model"));
        using var reference = ModelIO.Load(sft);
        var before = PreferenceEval.ImplicitReward(reference, reference, pairs.Pairs, 0, 0.5);
        var after = PreferenceEval.ImplicitReward(policy, reference, pairs.Pairs, 0, 0.5);
        Assert.Equal(0, before.Accuracy);
        Assert.True(after.Accuracy > 0.9 && after.MeanMargin > 0, o3);
        Assert.Contains($"{after.Accuracy:P1}", o3);
    }

    [Fact]
    public void PrecomputedReferenceCacheIsReusedOnlyForTheSameDataAndModel()
    {
        using var dir = TestPaths.NewTempDir();
        string sft = TinyModel(dir.Path), data = ToyPairs(dir.Path, 16), run = Path.Combine(dir.Path, "run");
        var pairs = PreferenceDataset.Load(data, new ByteTokenizer(), new PreferenceEncoding { MaxLength = 48 }).Pairs;
        using var model = ModelIO.Load(sft);
        string cache = Path.Combine(dir.Path, "ref.json");
        var first = Trainers.ReferenceLogps.LoadOrCompute(cache, model, pairs, 0, 5, out bool hit1);
        var second = Trainers.ReferenceLogps.LoadOrCompute(cache, model, pairs, 0, 5, out bool hit2);
        var other = Trainers.ReferenceLogps.LoadOrCompute(cache, model, pairs.Take(8).ToList(), 0, 5, out bool hit3);
        Assert.False(hit1);
        Assert.True(hit2);
        Assert.False(hit3);
        Assert.Equal(first.Chosen, second.Chosen);
        Assert.Equal(first.Chosen[..8], other.Chosen);
        Assert.All(first.Chosen.Zip(first.Rejected), t => Assert.True(t.First < 0 && t.Second < 0));
    }

    [Fact]
    public void KtoLogsTheKlReferencePointAndSeparatesThumbs()
    {
        using var dir = TestPaths.NewTempDir();
        string sft = TinyModel(dir.Path), data = ToyPairs(dir.Path), run = Path.Combine(dir.Path, "kto");
        var (code, stdout, stderr) = CliRunner.Run(Train("kto", run, "--model", sft, "--data", data, "--learning-rate", "3e-3", "--beta", "0.5"));
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("48 thumbs-up / 48 thumbs-down", stdout);
        var m = Metrics(run).Where(e => e.ContainsKey("loss")).ToList();
        Assert.All(m, e => Assert.True(e.ContainsKey("kl") && double.IsFinite(e["kl"]) && e["kl"] >= 0));
        Assert.True(m[^1]["rewards/chosen"] > m[^1]["rewards/rejected"], stdout);
        Assert.True(File.Exists(Path.Combine(run, "model", "config.json")));
    }

    [Fact]
    public void BcoRestoresTheRewardShiftOnResume()
    {
        using var dir = TestPaths.NewTempDir();
        string sft = TinyModel(dir.Path), data = ToyPairs(dir.Path);
        string straight = Path.Combine(dir.Path, "straight"), resumed = Path.Combine(dir.Path, "resumed");
        string[] args = ["--model", sft, "--data", data, "--learning-rate", "3e-3", "--udm", "--udm-max-per-side", "16"];
        Assert.Equal(0, CliRunner.Run(Train("bco", straight, args)).Code);
        var (code, stdout, stderr) = CliRunner.Run(Train("bco", resumed, args));
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("UDM classifier fitted", stdout);

        var atSix = RewardShift.Load(Path.Combine(resumed, "checkpoint-6", RewardShift.FileName));
        Assert.Equal(6 * 8, atSix.Count);
        Directory.Delete(Path.Combine(resumed, "checkpoint-12"), true);
        Directory.Delete(Path.Combine(resumed, "model"), true);
        File.Delete(Path.Combine(resumed, RewardShift.FileName));
        var (c2, o2, e2) = CliRunner.Run(Train("bco", resumed, [.. args, "--resume"]));
        Assert.True(c2 == 0, e2 + o2);

        var s1 = RewardShift.Load(Path.Combine(straight, RewardShift.FileName));
        var s2 = RewardShift.Load(Path.Combine(resumed, RewardShift.FileName));
        Assert.Equal(12 * 8, s2.Count);       // a restarted δ would count only 6 batches
        Assert.Equal(s1.Mean, s2.Mean);
        double[] Deltas(string run) => Metrics(run).Where(e => e.ContainsKey("delta")).Select(e => e["delta"]).ToArray();
        Assert.Equal(Deltas(straight), Deltas(resumed));
        double[] Losses(string run) => Metrics(run).Where(e => e.ContainsKey("loss")).Select(e => e["loss"]).ToArray();
        Assert.Equal(Losses(straight), Losses(resumed));
    }

    [Fact]
    public void TrDpoSyncMovesTheReferenceAndResumesExactly()
    {
        using var dir = TestPaths.NewTempDir();
        string sft = TinyModel(dir.Path), data = ToyPairs(dir.Path);
        string plain = Path.Combine(dir.Path, "plain"), straight = Path.Combine(dir.Path, "straight"), resumed = Path.Combine(dir.Path, "resumed");
        string[] common = ["--model", sft, "--data", data, "--learning-rate", "3e-3", "--beta", "0.5"];
        string[] sync = [.. common, "--sync-ref-model", "--ref-model-sync-steps", "4", "--ref-model-mixup-alpha", "0.5"];
        Assert.Equal(0, CliRunner.Run(Train("dpo", plain, common)).Code);
        Assert.Equal(0, CliRunner.Run(Train("dpo", straight, sync)).Code);
        Assert.Equal(0, CliRunner.Run(Train("dpo", resumed, sync)).Code);
        Assert.True(File.Exists(Path.Combine(resumed, "checkpoint-6", "ref_model", "config.json")));

        double[] Losses(string run) => Metrics(run).Where(e => e.ContainsKey("loss")).Select(e => e["loss"]).ToArray();
        var p = Losses(plain);
        var s = Losses(straight);
        Assert.Equal(p[..4], s[..4]);              // identical until the first sync after step 4
        Assert.NotEqual(p[4], s[4]);

        Directory.Delete(Path.Combine(resumed, "checkpoint-12"), true);
        Directory.Delete(Path.Combine(resumed, "model"), true);
        var (code, stdout, stderr) = CliRunner.Run(Train("dpo", resumed, [.. sync, "--resume"]));
        Assert.True(code == 0, stderr + stdout);
        Assert.Equal(s, Losses(resumed));
    }

    [Fact]
    public void MixIntoInterpolatesTheReference()
    {
        var tok = new ByteTokenizer();
        using var a = ModelFactory.Create(ModelPresets.Create("tiny", tok, 16), 1);
        using var b = ModelFactory.Create(ModelPresets.Create("tiny", tok, 16), 2);
        var before = a.parameters().First().clone();
        var target = b.parameters().First();
        Trainers.DpoTrainer.MixInto(a, b, 0.25);
        var expected = before * 0.75 + target * 0.25;
        Assert.True(a.parameters().First().allclose(expected, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void PolicyTrainersRequireAModelAndBadDataIsOneLine()
    {
        using var dir = TestPaths.NewTempDir();
        var (code, _, stderr) = CliRunner.Run("dpo", "--out", Path.Combine(dir.Path, "x"));
        Assert.Equal(1, code);
        Assert.Contains("dpo needs --model", stderr);

        string bad = Path.Combine(dir.Path, "bad.jsonl");
        File.WriteAllText(bad, "{\"prompt\":\"Q\",\"completion\":\"a\",\"label\":true}\n{\"prompt\":\"Q\",\"completion\":\"b\",\"label\":\"no\"}\n");
        var (c2, o2, e2) = CliRunner.Run(Train("kto", Path.Combine(dir.Path, "k"), "--model", TinyModel(dir.Path), "--data", bad));
        Assert.Equal(1, c2);
        Assert.Single(CliRunner.Lines(e2));
        Assert.Contains("bad.jsonl:2: field 'label': expected a boolean", e2);
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "k")), o2);
    }
}
