using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Tests.PpoTraining; // not "Ppo": that would shadow Objectives.Ppo in other test namespaces

[Collection("Serial torch RNG")]
public class PpoCommandTests
{
    private static readonly string[] Small =
        ["--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "2", "--max-new-tokens", "12", "--corpus-size", "60", "--threads", "1"];

    [Fact]
    public void SmokeRunLogsTrlMetricsAndWritesRollouts()
    {
        using var tmp = TestPaths.NewTempDir();
        string policy = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "policy"));
        string outDir = Path.Combine(tmp.Path, "ppo");
        var (code, stdout, err) = CliRunner.Run([.. "ppo --policy".Split(' '), policy, "--out", outDir, "--save-rollouts", "true",
            "--reward", "lexicon:token", "--reward", "lexicon@0.5", "--steps", "2", .. Small]);
        Assert.True(code == 0, err + stdout);
        var metrics = CommandFixtures.ReadJsonl(Path.Combine(outDir, "metrics.jsonl"));
        Assert.Equal(2, metrics.Count);
        foreach (var key in new[] { "objective/kl", "objective/scores", "objective/rlhf_reward", "objective/entropy", "objective/non_score_reward",
                     "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg", "val/ratio",
                     "rewards/lexicon", "rewards/lexicon_token", "rewards/total", "env/true_reward" })
            foreach (var m in metrics)
                Assert.True(m.ContainsKey(key) && double.IsFinite(m[key]!.GetValue<double>()), $"{key} missing or not finite");
        var rollouts = CommandFixtures.ReadJsonl(Path.Combine(outDir, OnlineRlTrainer.RolloutsFile));
        Assert.Equal(8, rollouts.Count);
        Assert.All(rollouts, r => Assert.Equal(CommandFixtures.Ints(r["response_ids"]).Length, CommandFixtures.Floats(r["token_rewards"]).Length));
        Assert.True(File.Exists(Path.Combine(outDir, OnlineRlTrainer.ModelFolder, "config.json")));
        using var value = ScoredLM.Load(Path.Combine(outDir, OnlineRlTrainer.ValueFolder));
        Assert.Equal((HeadKind.Token, 1), (value.Kind, value.NumLabels));
        // The run folder is a model folder like every trainer's (issue #12: PPO wrote policy/ and this failed).
        var gen = CliRunner.Run("generate", "--model", outDir, "--prompt", "a", "--max-new-tokens", "2", "--threads", "1");
        Assert.True(gen.Code == 0, gen.Err);
    }

    [Fact]
    public void ResumeContinuesTheSameRun()
    {
        using var tmp = TestPaths.NewTempDir();
        string policy = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "policy"));
        string a = Path.Combine(tmp.Path, "a"), b = Path.Combine(tmp.Path, "b");
        // Shared trunk: the value head is restored from value/value_head.safetensors on resume.
        string[] common = [.. "ppo --policy".Split(' '), policy, "--reward", "lexicon:token", "--save-steps", "1", "--shared-trunk", "true", .. Small];
        Assert.Equal(0, CliRunner.Run([.. common, "--out", a, "--steps", "2"]).Code);
        var stop = CliRunner.Run([.. common, "--out", b, "--steps", "1"]);
        Assert.Equal(0, stop.Code);
        var resumed = CliRunner.Run([.. common, "--out", b, "--steps", "2", "--resume", "true"]);
        Assert.True(resumed.Code == 0, resumed.Err);
        var ma = CommandFixtures.ReadJsonl(Path.Combine(a, "metrics.jsonl"));
        var mb = CommandFixtures.ReadJsonl(Path.Combine(b, "metrics.jsonl"));
        Assert.Equal(2, mb.Count);
        Assert.True(File.Exists(Path.Combine(b, OnlineRlTrainer.ValueFolder, "value_head.safetensors")));
        foreach (var key in new[] { "objective/scores", "objective/kl", "loss/policy_avg", "loss/value_avg" })
            Assert.Equal(ma[1][key]!.GetValue<double>(), mb[1][key]!.GetValue<double>(), 5);
    }

    [Fact]
    public void NaNRewardIsAOneLineErrorNamingTheSourceAndTheBatch()
    {
        using var tmp = TestPaths.NewTempDir();
        var config = TinyModels.ByteLlama();
        using var policy = ModelFactory.Create(config, 1);
        using var reference = ModelFactory.Create(config, 1);
        using var value = ValueModel.Shared(policy, 1);
        var reward = ProgrammaticRewardSource.Sequence("broken", e => e.Index == 1 ? double.NaN : 0.0);
        using var trainer = new OnlineRlTrainer(policy, reference, value, new ByteTokenizer(), reward, ["a", "b", "c"],
            OnlineRlOptions.Ppo with { OutputDir = tmp.Path, Steps = 1, BatchSize = 2, MiniBatchSize = 2, MaxNewTokens = 4 });
        var ex = Assert.Throws<FineAlignException>(() => trainer.Train());
        Assert.DoesNotContain('\n', ex.Message);
        Assert.Contains("'broken'", ex.Message);
        Assert.Contains("rollout batch 1", ex.Message);
        Assert.Contains("batch index 1", ex.Message);
    }

    [Fact]
    public void RewardModelWithAnotherTokenizerIsRefusedUnlessRetokenizing()
    {
        using var tmp = TestPaths.NewTempDir();
        var config = TinyModels.ByteLlama();
        string rmDir = Path.Combine(tmp.Path, "rm"), discDir = Path.Combine(tmp.Path, "disc");
        using (var rm = new ScoredLM(ModelFactory.Create(config, 2), HeadKind.Sequence, 1)) rm.Save(rmDir, new ByteTokenizer());
        using (var d = new ScoredLM(ModelFactory.Create(config, 2), HeadKind.Token, 2)) d.Save(discDir, new ByteTokenizer());
        // A policy tokenizer whose ids differ (EOS/pad swapped) from the reward models' byte tokenizer.
        var other = new ByteTokenizer { EosId = 258, PadId = 257 };
        var refused = Assert.Throws<FineAlignException>(() => RewardSpecs.Build([$"rm:{rmDir}"], other));
        Assert.Contains("--retokenize", refused.Message);
        var warnings = new List<string>();
        var source = RewardSpecs.Build([$"rm:{rmDir}"], other, retokenize: true, warn: warnings.Add);
        Assert.Single(warnings);
        using var ids = TorchSharp.torch.tensor(new long[] { 104, 105, 33, 258 }, [1, 4]);
        using var mask = TorchSharp.torch.ones(1, 4);
        using var r = source.Compute(new RewardBatch(ids, mask, null, ["say"], ["hi!"]));
        Assert.True(float.IsFinite(r.Values[0, 3].item<float>()) && r.Values[0, 3].item<float>() != 0f);
        // Token-level rewards cannot be mapped across tokenizers: always refused.
        Assert.Contains("tokenizer differs", Assert.Throws<FineAlignException>(() => RewardSpecs.Build([$"tlcr:{discDir}"], other, retokenize: true)).Message);
        // The CLI refuses a missing model folder with one line.
        var (code, _, err) = CliRunner.Run("ppo", "--policy", Path.Combine(tmp.Path, "nope"), "--out", Path.Combine(tmp.Path, "o"));
        Assert.Equal(1, code);
        Assert.Single(CliRunner.Lines(err));
    }
}
