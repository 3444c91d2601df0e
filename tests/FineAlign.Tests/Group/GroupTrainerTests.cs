using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Tests.Group;

[Collection("Serial torch RNG")]
public class GroupTrainerTests
{
    private static readonly string[] Small =
        ["--batch-size", "4", "--num-generations", "2", "--max-new-tokens", "10", "--corpus-size", "60", "--threads", "1"];

    private static readonly string[] TrlKeys =
    [
        "reward", "reward_std", "kl", "clip_ratio", "completions/mean_length", "frac_reward_zero_std", "loss", "entropy",
        "rewards/lexicon", "rewards/lexicon_token", "rewards/total", "env/true_reward", "objective/kl",
    ];

    private static double D(JsonObject m, string key) => m[key]!.GetValue<double>();

    [Theory]
    [InlineData("grpo", "grpo", "grpo", "batch")]
    [InlineData("rloo", "rloo", "token", "group")]
    [InlineData("grpo", "reinforce++", "dr_grpo", "none")]
    public void TinyRunLogsFiniteTrlMetrics(string command, string advantage, string lossType, string scaleRewards)
    {
        using var tmp = TestPaths.NewTempDir();
        string policy = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "policy"));
        string outDir = Path.Combine(tmp.Path, "out");
        var (code, stdout, err) = CliRunner.Run([command, "--policy", policy, "--out", outDir, "--advantage", advantage,
            "--reward", "lexicon", "--reward", "lexicon:token@0.5", "--steps", "2", "--beta", "0.04", "--num-iterations", "2",
            "--mini-batch-size", "2", "--save-rollouts", "true", "--loss-type", lossType, "--scale-rewards", scaleRewards, .. Small]);
        Assert.True(code == 0, err + stdout);
        var metrics = CommandFixtures.ReadJsonl(Path.Combine(outDir, "metrics.jsonl"));
        Assert.Equal(2, metrics.Count);
        foreach (var m in metrics)
            foreach (var key in TrlKeys)
                Assert.True(m.ContainsKey(key) && double.IsFinite(D(m, key)), $"{key} missing or not finite");
        Assert.All(metrics, m => Assert.InRange(D(m, "frac_reward_zero_std"), 0.0, 1.0));
        Assert.Equal(command == "rloo" ? 0.05 : 0.0, D(metrics[0], "kl_coef"));
        var rollouts = CommandFixtures.ReadJsonl(Path.Combine(outDir, OnlineRlTrainer.RolloutsFile));
        Assert.Equal(8, rollouts.Count);
        // Two completions per prompt, next to each other.
        Assert.Equal(rollouts[0]["prompt"]!.GetValue<string>(), rollouts[1]["prompt"]!.GetValue<string>());
        if (advantage != "reinforce++")
            foreach (var grp in rollouts.Where(r => D(r, "step") == 1).GroupBy(r => D(r, "group")))
                Assert.Equal(0.0, grp.Sum(r => D(r, "advantage")), 4); // group-centred: advantages sum to zero
        Assert.True(File.Exists(Path.Combine(outDir, OnlineRlTrainer.ModelFolder, "config.json")));
    }

    [Theory]
    [InlineData(AdvantageEstimators.Grpo)]
    [InlineData(AdvantageEstimators.Rloo)]
    [InlineData(AdvantageEstimators.ReinforcePlusPlus)]
    public void ConstantRewardGivesZeroStdGroupsWithoutNaN(string advantage)
    {
        using var tmp = TestPaths.NewTempDir();
        var config = TinyModels.ByteLlama();
        using var policy = ModelFactory.Create(config, 1);
        using var reference = ModelFactory.Create(config, 1);
        var constant = ProgrammaticRewardSource.Sequence("constant", _ => 1.0);
        using var trainer = new OnlineRlTrainer(policy, reference, null, new ByteTokenizer(), constant, ["a", "b", "c"],
            OnlineRlOptions.Grpo with { OutputDir = tmp.Path, Advantage = advantage, Steps = 2, BatchSize = 6, NumGenerations = 3, MaxNewTokens = 5 });
        var result = trainer.Train();
        Assert.True(result.Completed);
        foreach (var m in result.LogHistory)
        {
            Assert.All(m, kv => Assert.True(double.IsFinite(kv.Value), $"{kv.Key} = {kv.Value}"));
            Assert.Equal(1.0, m["frac_reward_zero_std"]);
            Assert.Equal(2.0, m["zero_std_groups"]);
            Assert.Equal(0.0, m["reward_std"], 6);
            if (advantage == AdvantageEstimators.Grpo) Assert.Equal(0.0, m["loss"], 6); // zero advantage, β = 0: nothing to learn
        }
    }

    [Theory]
    [InlineData(AdvantageEstimators.Grpo)]
    [InlineData(AdvantageEstimators.Rloo)]
    public void AVaryingRewardMovesThePolicyAwayFromTheReference(string advantage)
    {
        using var tmp = TestPaths.NewTempDir();
        using var policy = TinyModel(1);
        using var reference = TinyModel(1);
        // Reward = share of 'a' bytes: differs between samples, so groups have spread and advantages are non-zero.
        var reward = ProgrammaticRewardSource.Sequence("a_share", e => e.ResponseIds.Length == 0 ? 0 : e.ResponseIds.Count(t => t == 'a') / (double)e.ResponseIds.Length);
        using var trainer = new OnlineRlTrainer(policy, reference, null, new ByteTokenizer(), reward, ["a", "b", "c"],
            OnlineRlOptions.Grpo with { OutputDir = tmp.Path, Advantage = advantage, Steps = 2, BatchSize = 6, NumGenerations = 3, MaxNewTokens = 8,
                LearningRate = 1e-2, Epochs = 2, Beta = 0.04 });
        var h = trainer.Train().LogHistory;
        Assert.All(h, m => Assert.All(m, kv => Assert.True(double.IsFinite(kv.Value), kv.Key)));
        Assert.True(h[0]["frac_reward_zero_std"] < 1 && h[0]["reward_std"] > 0);
        Assert.Equal(0.0, h[0]["kl"], 6);                  // the first batch is sampled from the reference itself
        Assert.True(h[1]["kl"] > 1e-6, $"kl {h[1]["kl"]}"); // after the updates the policy has moved
        Assert.InRange(h[1]["clip_ratio"], 0.0, 1.0);
        Assert.True(h[0]["rewards/a_share"] >= 0);
    }

    [Fact]
    public void NaNRewardIsAOneLineErrorNamingTheSourceAndTheBatch()
    {
        using var tmp = TestPaths.NewTempDir();
        using var policy = TinyModel(1);
        using var reference = TinyModel(1);
        var broken = ProgrammaticRewardSource.Sequence("broken", e => e.Index == 3 ? double.NaN : 0.0);
        using var trainer = new OnlineRlTrainer(policy, reference, null, new ByteTokenizer(), broken, ["a", "b"],
            OnlineRlOptions.Grpo with { OutputDir = tmp.Path, Steps = 1, BatchSize = 4, NumGenerations = 2, MaxNewTokens = 4 });
        var ex = Assert.Throws<FineAlignException>(() => trainer.Train());
        Assert.DoesNotContain('\n', ex.Message);
        Assert.Contains("'broken'", ex.Message);
        Assert.Contains("batch index 3", ex.Message);
        Assert.Contains("generation batch 1", ex.Message);
    }

    private static CausalLM TinyModel(long seed) => ModelFactory.Create(new ModelConfig
    {
        ModelType = "llama", VocabSize = 261, HiddenSize = 16, IntermediateSize = 32, NumLayers = 1, NumHeads = 2,
        NumKvHeads = 2, HeadDim = 8, MaxPositionEmbeddings = 64, BosTokenId = 256, EosTokenIds = [257], PadTokenId = 258,
    }, seed);

    [Fact]
    public void ResumeReproducesTheMetrics()
    {
        using var tmp = TestPaths.NewTempDir();
        string policy = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "policy"));
        string a = Path.Combine(tmp.Path, "a"), b = Path.Combine(tmp.Path, "b");
        string[] common = ["grpo", "--policy", policy, "--reward", "lexicon:token", "--save-steps", "1", "--beta", "0.04", .. Small];
        Assert.Equal(0, CliRunner.Run([.. common, "--out", a, "--steps", "3"]).Code);
        Assert.Equal(0, CliRunner.Run([.. common, "--out", b, "--steps", "1"]).Code);
        var resumed = CliRunner.Run([.. common, "--out", b, "--steps", "3", "--resume", "true"]);
        Assert.True(resumed.Code == 0, resumed.Err);
        var ma = CommandFixtures.ReadJsonl(Path.Combine(a, "metrics.jsonl"));
        var mb = CommandFixtures.ReadJsonl(Path.Combine(b, "metrics.jsonl"));
        Assert.Equal(3, mb.Count);
        foreach (int i in new[] { 1, 2 })
            foreach (var key in new[] { "reward", "kl", "loss", "clip_ratio", "completions/mean_length" })
                Assert.Equal(D(ma[i], key), D(mb[i], key), 5);
        // Resuming as another estimator is refused.
        var wrong = CliRunner.Run([.. common, "--out", b, "--steps", "4", "--resume", "true", "--advantage", "rloo"]);
        Assert.Equal(1, wrong.Code);
        Assert.Contains("--advantage", wrong.Err);
    }

    [Theory]
    [InlineData("grpo", "1", "4", "--num-generations")]
    [InlineData("rloo", "1", "4", "--num-generations")]
    [InlineData("grpo", "3", "4", "multiple of --num-generations")]
    public void BadGroupSizeIsAOneLineError(string command, string g, string batch, string expected)
    {
        using var tmp = TestPaths.NewTempDir();
        var (code, _, err) = CliRunner.Run(command, "--policy", Path.Combine(tmp.Path, "missing"), "--out", Path.Combine(tmp.Path, "o"),
            "--num-generations", g, "--batch-size", batch);
        Assert.Equal(1, code);
        Assert.Single(CliRunner.Lines(err));
        Assert.Contains(expected, err);
    }

    [Fact]
    public void PromptsComeInContiguousGroupsAndCycleThroughTheSet()
    {
        using var tmp = TestPaths.NewTempDir();
        var config = new ModelConfig
        {
            ModelType = "llama", VocabSize = 261, HiddenSize = 8, IntermediateSize = 16, NumLayers = 1, NumHeads = 2,
            NumKvHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 32, BosTokenId = 256, EosTokenIds = [257], PadTokenId = 258,
        };
        using var policy = ModelFactory.Create(config, 1);
        using var reference = ModelFactory.Create(config, 1);
        string[] prompts = ["p0", "p1", "p2", "p3"];
        using var trainer = new OnlineRlTrainer(policy, reference, null, new ByteTokenizer(), RewardSpecs.Lexicon(), prompts,
            OnlineRlOptions.Grpo with { OutputDir = tmp.Path, BatchSize = 6, NumGenerations = 3 });
        var seen = new List<string>();
        foreach (int step in new[] { 1, 2 })
        {
            var list = trainer.PromptsFor(step);
            Assert.Equal(6, list.Count);
            Assert.Equal(list[0], list[2]);
            Assert.Equal(list[3], list[5]);
            seen.Add(list[0]); seen.Add(list[3]);
        }
        Assert.Equal(prompts.OrderBy(p => p), seen.OrderBy(p => p)); // one pass = each prompt exactly once
    }
}
