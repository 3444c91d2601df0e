using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Generation;

/// <summary>
/// <c>--rollout-dtype bfloat16</c> (issue #18): rollouts sample from a bf16 copy of the policy refreshed at every request;
/// the policy, its scoring and its update stay fp32.
/// </summary>
[Collection("Serial torch RNG")]
public class RolloutDtypeTests
{
    private static readonly ModelConfig Config = new()
    {
        ModelType = "llama", VocabSize = 261, HiddenSize = 16, IntermediateSize = 32, NumLayers = 1, NumHeads = 2,
        NumKvHeads = 2, HeadDim = 8, MaxPositionEmbeddings = 64, BosTokenId = 256, EosTokenIds = [257], PadTokenId = 258,
    };

    private static readonly RolloutRequest Request = new() { PromptIds = [[256, 97, 98], [256, 120]], SamplesPerPrompt = 2, MaxNewTokens = 8, Seed = 5, TopK = 40 };

    /// <summary>What the engine should sample: the sampler run on a bf16 cast of <paramref name="tensors"/>.</summary>
    private static IReadOnlyList<GeneratedSequence> FromCast(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        using var copy = ModelFactory.Construct(Config, ScalarType.BFloat16);
        WeightCopy.Copy(tensors.ToDictionary(kv => kv.Key, kv => kv.Value), copy, "test");
        var rows = Request.PromptIds.SelectMany(p => new[] { p, p }).ToList();
        return TextGenerator.Generate(copy, rows, new GenerationOptions { MaxNewTokens = 8, Seed = 5, TopK = 40, EosTokenIds = Request.StopTokenIds });
    }

    [Fact]
    public void Bf16_rollouts_sample_from_a_cast_copy_that_follows_every_update()
    {
        using var policy = ModelFactory.Create(Config, 3);
        var engine = new LocalRolloutEngine(policy, rolloutDtype: ScalarType.BFloat16);
        var first = engine.Generate(Request);
        var expected = FromCast(policy.state_dict());
        for (int i = 0; i < first.Count; i++)
        {
            Assert.Equal(expected[i].Tokens, first[i].ResponseIds);
            Assert.Equal(expected[i].LogProbs, first[i].LogProbs);
        }
        Assert.All(policy.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));   // the policy itself is untouched

        // An update between two requests (in place, as the optimizer writes) reaches the next rollout.
        using (no_grad()) foreach (var p in policy.parameters()) p.mul_(-2.0);
        var second = engine.Generate(Request);
        var expectedSecond = FromCast(policy.state_dict());
        Assert.NotEqual(first.Select(s => s.LogProbs![0]), second.Select(s => s.LogProbs![0]));
        for (int i = 0; i < second.Count; i++) Assert.Equal(expectedSecond[i].LogProbs, second[i].LogProbs);
    }

    [Fact]
    public void A_lora_policy_rolls_out_with_its_adapters_folded_in()
    {
        using var policy = ModelFactory.Create(Config, 4);
        Lora.Apply(policy, new LoraSettings { R = 2, Alpha = 4, Dropout = 0 }, seed: 1);
        using (no_grad())
            foreach (var (name, p) in policy.named_parameters())
                if (name.Contains("lora_B")) p.normal_(0, 0.5);                 // a trained adapter (B = 0 would change nothing)
        var engine = new LocalRolloutEngine(policy, rolloutDtype: ScalarType.BFloat16);
        var got = engine.Generate(Request);
        var merged = FromCast(Lora.MergedTensors(policy).ToList());
        var baseOnly = FromCast(policy.state_dict().Where(kv => !kv.Key.Contains(".lora_")).ToList());
        for (int i = 0; i < got.Count; i++) Assert.Equal(merged[i].LogProbs, got[i].LogProbs);
        Assert.NotEqual(baseOnly.Select(s => s.LogProbs[0]), got.Select(s => s.LogProbs![0]));
    }

    [Fact]
    public void Ppo_with_bf16_rollouts_still_scores_in_fp32_so_the_first_epoch_ratio_is_one()
    {
        using var tmp = TestPaths.NewTempDir();
        using var policy = ModelFactory.Create(Config, 1);
        using var reference = ModelFactory.Create(Config, 1);
        using var valueTrunk = new ScoredLM(ModelFactory.Create(Config, 1), HeadKind.Token, 1, seed: 2);
        var tok = new ByteTokenizer();
        var reward = ProgrammaticRewardSource.Sequence("len", e => e.ResponseIds.Length);
        var engine = new LocalRolloutEngine(policy, tok, ScalarType.BFloat16);
        using var trainer = new OnlineRlTrainer(policy, reference, ValueModel.Separate(valueTrunk), tok, reward, ["p0", "p1"],
            OnlineRlOptions.Ppo with { OutputDir = tmp.Path, Steps = 2, BatchSize = 2, MiniBatchSize = 2, Epochs = 1, MaxNewTokens = 6 })
        { Rollouts = engine, WriteTensorBoard = false };
        foreach (int step in new[] { 1, 2 })   // step 2 samples from the copy made inside step 1's dispose scope
        {
            var m = trainer.Step(step);
            Assert.Equal(1.0, m["val/ratio"], 6);            // old log-probs = the fp32 policy's, not the bf16 sampler's
            Assert.Equal(0.0, m["policy/clipfrac_avg"]);
        }
        Assert.All(policy.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
    }
}

[Collection("Serial torch RNG")]
public class RolloutDtypeCommandTests
{
    [Fact]
    public void Ppo_takes_rollout_dtype_and_refuses_a_bad_value_or_rollout_servers()
    {
        using var tmp = TestPaths.NewTempDir();
        string policy = FineAlign.Tests.Cli.CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "policy"));
        string[] common = ["ppo", "--policy", policy, "--reward", "lexicon", "--steps", "1", "--batch-size", "2", "--mini-batch-size", "2",
            "--ppo-epochs", "1", "--max-new-tokens", "6", "--corpus-size", "20", "--threads", "1"];
        var ok = FineAlign.Tests.Cli.CliRunner.Run([.. common, "--out", Path.Combine(tmp.Path, "bf16"), "--rollout-dtype", "bfloat16"]);
        Assert.True(ok.Code == 0, ok.Err + ok.Out);
        var metrics = FineAlign.Tests.Cli.CommandFixtures.ReadJsonl(Path.Combine(tmp.Path, "bf16", "metrics.jsonl"));
        Assert.Equal(1.0, metrics[0]["val/ratio"]!.GetValue<double>(), 6);

        var bad = FineAlign.Tests.Cli.CliRunner.Run([.. common, "--out", Path.Combine(tmp.Path, "bad"), "--rollout-dtype", "int8"]);
        Assert.NotEqual(0, bad.Code);
        Assert.Contains("--rollout-dtype", bad.Err);
        var remote = FineAlign.Tests.Cli.CliRunner.Run([.. common, "--out", Path.Combine(tmp.Path, "remote"), "--rollout-dtype", "bfloat16",
            "--rollout-endpoint", "http://127.0.0.1:9", "--rollout-model", "m"]);
        Assert.NotEqual(0, remote.Code);
        Assert.Contains("--rollout-dtype", remote.Err);
    }
}
