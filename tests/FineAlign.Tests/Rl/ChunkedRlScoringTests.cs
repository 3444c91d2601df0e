using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Rl;

/// <summary>
/// The online-RL scoring and update passes through the chunked LM head (issue #15): log-probs and PPO's entropy from a
/// chunk of response positions at a time equal the full-[B, T, vocab]-logits path, and a PPO step never runs the LM
/// head on more than one chunk of rows.
/// </summary>
[Collection("Serial torch RNG")]
public class ChunkedRlScoringTests
{
    // Three rows: prompt lengths 2, 4, 3 (left-padded to 4); responses of 5, 2 and 4 tokens (right-padded to 5).
    private static RolloutBatch Rollout()
    {
        var prompts = new List<int[]> { new[] { 256, 7 }, new[] { 256, 9, 10, 11 }, new[] { 256, 40, 41 } };
        var samples = new List<RolloutSample>
        {
            new([3, 4, 5, 6, 257], null, RolloutFinish.Stop), new([8, 9], null, RolloutFinish.Length), new([100, 200, 31, 2], null, RolloutFinish.Length),
        };
        return RolloutBatch.From(samples, prompts, ["a", "b", "c"], ["x", "y", "z"], 258);
    }

    [Theory]
    [InlineData(1, 1.0)]
    [InlineData(2, 1.0)]
    [InlineData(3, 0.7)]
    [InlineData(1024, 0.7)]
    [InlineData(0, 1.3)]
    public void Chunked_log_probs_and_entropy_equal_the_full_logits_path(int chunk, double temperature)
    {
        using var model = ModelFactory.Create(TinyModels.ByteLlama(), 4);
        using var rollout = Rollout();
        using var _ = no_grad();
        var mask = rollout.ResponseMask;
        var logits = model.Forward(rollout.InputIds, rollout.AttentionMask);
        var fullLogp = rollout.ResponseLogProbs(logits, temperature) * mask;
        var fullEntropy = Kl.Entropy(rollout.ResponseLogits(logits) / temperature, mask);
        var hidden = model.ForwardHidden(rollout.InputIds, rollout.AttentionMask);
        var (logp, entropy) = rollout.ScoreResponses(model, hidden, temperature, entropy: true, chunk: chunk);
        if (chunk <= 0 || chunk >= 30)
        {
            // One chunk holds every response position: bit for bit the full path (same log_softmax, gather and sums).
            Assert.Equal(RlTensors.V(fullLogp), RlTensors.V(logp));
            Assert.Equal(RlTensors.V(fullEntropy), RlTensors.V(entropy!));
        }
        else
        {
            // Smaller chunks: the LM-head GEMM for another row count may round a logit's last bit differently (this
            // CPU's BLAS does so even for the full path when the batch has one row more or less); nothing else differs.
            Assert.True((fullLogp - logp).abs().max().item<float>() <= 1e-6, "log-probs");
            Assert.True((fullEntropy - entropy!).abs().max().item<float>() <= 1e-6, "entropy");
        }
        Assert.Equal(0f, (logp * (1 - mask)).abs().sum().item<float>());   // padding: exactly 0, never computed
        Assert.True(entropy!.gt(0).logical_and(mask.ne(0)).sum().item<long>() == mask.sum().item<float>());

        // A subset of rows (a mini-batch) in another order.
        var rows = tensor(new long[] { 2, 0 });
        var (sub, _) = rollout.ScoreResponses(model, hidden.index_select(0, rows), temperature, rows, chunk: chunk);
        Assert.True((fullLogp.index_select(0, rows) - sub).abs().max().item<float>() <= 1e-6, "mini-batch rows");
    }

    [Fact]
    public void Chunked_update_gradients_and_entropy_equal_the_full_logits_path()
    {
        using var model = ModelFactory.Create(TinyModels.ByteLlama(), 4);
        using var rollout = Rollout();
        var mask = rollout.ResponseMask;
        var logits = model.Forward(rollout.InputIds, rollout.AttentionMask);
        var fullLogp = rollout.ResponseLogProbs(logits, 0.9);
        (fullLogp * mask * 0.3).sum().backward();
        var expected = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        Tensor fullEntropy;
        using (no_grad()) fullEntropy = Kl.Entropy(rollout.ResponseLogits(logits) / 0.9, mask);
        foreach (int chunk in new[] { 2, 1024 })
        {
            model.zero_grad();
            var (logp, entropy) = rollout.ScoreResponses(model, model.ForwardHidden(rollout.InputIds, rollout.AttentionMask), 0.9,
                entropy: true, chunk: chunk);
            Assert.False(entropy!.requires_grad);                               // a metric, taken in the forward pass only
            if (chunk == 1024) Assert.Equal(RlTensors.V(fullEntropy), RlTensors.V(entropy));
            else Assert.True((fullEntropy - entropy).abs().max().item<float>() <= 1e-6);
            (logp * mask * 0.3).sum().backward();
            foreach (var (name, p) in model.named_parameters())
            {
                double diff = (expected[name] - p.grad!).abs().max().item<float>();
                double scale = expected[name].abs().max().item<float>();
                // The sum of per-chunk gradient contributions can round differently from one GEMM over all rows.
                Assert.True(diff <= 1e-6 * Math.Max(1, scale), $"chunk {chunk}, {name}: max |diff| = {diff} (scale {scale})");
            }
        }
    }

    /// <summary>A policy wrapper that records how many rows each LM-head call received.</summary>
    private sealed class HeadRows : CausalLM
    {
        private readonly CausalLM inner;
        public List<long> Rows { get; } = [];
        public HeadRows(CausalLM inner) : base(nameof(HeadRows), inner.Config) { this.inner = inner; RegisterComponents(); }
        public override Tensor ForwardHidden(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null) => inner.ForwardHidden(inputIds, attentionMask, cache);
        public override Tensor LmHead(Tensor hidden) { Rows.Add(hidden.shape[..^1].Aggregate(1L, (a, b) => a * b)); return inner.LmHead(hidden); }
    }

    /// <summary>Fixed responses, so every LM-head call of the step comes from scoring and updating, not from sampling.</summary>
    private sealed class Canned : IRolloutEngine
    {
        public IReadOnlyList<RolloutSample> Generate(RolloutRequest request) => Enumerable.Range(0, request.Count)
            .Select(i => new RolloutSample(Enumerable.Range(0, 6 + i).Select(j => 3 + (7 * i + j) % 200).ToArray(), null, RolloutFinish.Length)).ToList();
    }

    [Fact]
    public void A_ppo_step_runs_the_lm_head_one_chunk_at_a_time_and_gets_the_same_metrics()
    {
        Dictionary<string, double> Run(int? chunk, out List<long> rows)
        {
            using var tmp = TestPaths.NewTempDir();
            var policy = new HeadRows(ModelFactory.Create(TinyModels.ByteLlama(), 1));
            var reference = new HeadRows(ModelFactory.Create(TinyModels.ByteLlama(), 7));
            using var value = ValueModel.Shared(policy, 2);
            var tok = new ByteTokenizer();
            var reward = ProgrammaticRewardSource.Sequence("len", e => e.ResponseIds.Length % 3);
            var options = OnlineRlOptions.Ppo with
            {
                OutputDir = tmp.Path, Steps = 1, BatchSize = 4, MiniBatchSize = 2, Epochs = 2, MaxNewTokens = 9, KlCoef = 0.1, LearningRate = 1e-3,
            };
            ChunkedLmHead.Chunk = chunk;
            try
            {
                using var trainer = new OnlineRlTrainer(policy, reference, value, tok, reward, ["p0", "p1", "p2", "p3"], options)
                { Rollouts = new Canned(), WriteTensorBoard = false };
                var m = trainer.Step(1);
                rows = policy.Rows.Concat(reference.Rows).ToList();
                return m;
            }
            finally { ChunkedLmHead.Chunk = null; }
        }
        var plain = Run(null, out var plainRows);
        var chunked = Run(4, out var chunkedRows);
        // 4 responses of 6..9 tokens = 30 scored positions: never a [B, P + T] block of logits.
        Assert.All(plainRows, r => Assert.True(r <= 30, $"an LM-head call on {r} rows"));
        Assert.All(chunkedRows, r => Assert.True(r <= 4, $"an LM-head call on {r} rows with chunks of 4"));
        Assert.Contains(chunkedRows, r => r == 4);
        foreach (var key in new[] { "objective/kl", "objective/entropy", "policy/entropy_avg", "loss/policy_avg", "loss/value_avg" })
        {
            Assert.True(plain[key] != 0, key);
            Assert.True(Math.Abs(plain[key] - chunked[key]) <= 1e-5 * Math.Max(1, Math.Abs(plain[key])), $"{key}: {plain[key]} vs {chunked[key]}");
        }
    }
}
