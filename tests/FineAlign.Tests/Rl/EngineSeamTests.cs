using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using static TorchSharp.torch;

namespace FineAlign.Tests.Rl;

/// <summary>The online-RL engine's seams: the rollout engine it samples through, and the estimator / loss registries.</summary>
[Collection("Serial torch RNG")]
public class EngineSeamTests
{
    private static CausalLM Tiny(long seed) => ModelFactory.Create(new ModelConfig
    {
        ModelType = "llama", VocabSize = 261, HiddenSize = 16, IntermediateSize = 32, NumLayers = 1, NumHeads = 2,
        NumKvHeads = 2, HeadDim = 8, MaxPositionEmbeddings = 64, BosTokenId = 256, EosTokenIds = [257], PadTokenId = 258,
    }, seed);

    /// <summary>A real engine behind a recorder: what the trainer asks for is what a remote engine would receive.</summary>
    private sealed class Recording(IRolloutEngine inner) : IRolloutEngine
    {
        public List<RolloutRequest> Requests { get; } = [];
        public IReadOnlyList<RolloutSample> Generate(RolloutRequest request) { Requests.Add(request); return inner.Generate(request); }
    }

    [Fact]
    public void LocalEngineIsPromptMajorAndMatchesTheSampler()
    {
        using var model = Tiny(3);
        var tok = new ByteTokenizer();
        int[] a = TextGenerator.EncodePrompt(tok, "ab"), b = TextGenerator.EncodePrompt(tok, "xyz");
        var samples = new LocalRolloutEngine(model, tok).Generate(new RolloutRequest
        {
            PromptIds = [a, b], SamplesPerPrompt = 2, MaxNewTokens = 6, Seed = 9, TopK = 50,
        });
        var direct = TextGenerator.Generate(model, [a, a, b, b], new GenerationOptions { MaxNewTokens = 6, Seed = 9, TopK = 50 }, tok);
        Assert.Equal(4, samples.Count);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(direct[i].Tokens, samples[i].ResponseIds);
            Assert.Equal(direct[i].LogProbs, samples[i].LogProbs);
            Assert.Equal(direct[i].FinishReason == FinishReason.Eos ? RolloutFinish.Stop : RolloutFinish.Length, samples[i].Finish);
        }
        Assert.Throws<FineAlignException>(() => new LocalRolloutEngine(model).Generate(new RolloutRequest { PromptIds = [[]] }));
    }

    [Fact]
    public void TheTrainerSendsTokenIdsOncePerGroupThroughTheEngine()
    {
        using var tmp = TestPaths.NewTempDir();
        using var policy = Tiny(1);
        using var reference = Tiny(1);
        var tok = new ByteTokenizer();
        var recorder = new Recording(new LocalRolloutEngine(policy, tok));
        var reward = ProgrammaticRewardSource.Sequence("len", e => e.ResponseIds.Length);
        string[] prompts = ["p0", "p1", "p2"];
        using var trainer = new OnlineRlTrainer(policy, reference, null, tok, reward, prompts,
            OnlineRlOptions.Grpo with { OutputDir = tmp.Path, Steps = 2, BatchSize = 4, NumGenerations = 2, MaxNewTokens = 4 })
        { Rollouts = recorder, WriteTensorBoard = false };
        Assert.True(trainer.Train().Completed);
        Assert.Equal(2, recorder.Requests.Count);
        foreach (var (request, step) in recorder.Requests.Select((q, i) => (q, i + 1)))
        {
            Assert.Equal(2, request.SamplesPerPrompt);
            Assert.Equal(4, request.MaxNewTokens);
            Assert.Equal(new[] { 257 }, request.StopTokenIds);
            var expected = trainer.PromptsFor(step).Where((_, i) => i % 2 == 0).Select(p => TextGenerator.EncodePrompt(tok, p)).ToList();
            Assert.Equal(expected, request.PromptIds);
        }
        Assert.NotEqual(recorder.Requests[0].Seed, recorder.Requests[1].Seed); // a fresh stream per step, fixed by (seed, step)
    }

    [Fact]
    public void AnEngineReturningTheWrongCountIsAClearError()
    {
        using var tmp = TestPaths.NewTempDir();
        using var policy = Tiny(1);
        using var reference = Tiny(1);
        var tok = new ByteTokenizer();
        using var trainer = new OnlineRlTrainer(policy, reference, null, tok, RewardSpecs.Lexicon(), ["a", "b"],
            OnlineRlOptions.Grpo with { OutputDir = tmp.Path, Steps = 1, BatchSize = 4, NumGenerations = 2, MaxNewTokens = 3 })
        { Rollouts = new Short(new LocalRolloutEngine(policy, tok)), WriteTensorBoard = false };
        var ex = Assert.Throws<FineAlignException>(() => trainer.Train());
        Assert.Contains("returned 3 samples for 4", ex.Message);
    }

    private sealed class Short(IRolloutEngine inner) : IRolloutEngine
    {
        public IReadOnlyList<RolloutSample> Generate(RolloutRequest request) => inner.Generate(request).Take(request.Count - 1).ToList();
    }

    [Fact]
    public void EstimatorsAreChosenByNameWithOneSignature()
    {
        // Two groups of two, one token each: shaped rewards 1, 3 | 2, 2.
        var rewards = tensor(new float[] { 1, 3, 2, 2 }, [4, 1]);
        var mask = ones(4, 1);
        var input = new AdvantageInput { Rewards = rewards, Mask = mask, GroupSize = 2, ScaleRewards = RewardScaling.None };
        Assert.Equal(new float[] { -1, 1, 0, 0 }, AdvantageEstimators.Get("grpo").Estimate(input).Advantages.data<float>().ToArray());
        Assert.Equal(new float[] { -1, 1, 0, 0 }, AdvantageEstimators.Get("dr-grpo").Estimate(input with { ScaleRewards = RewardScaling.Group })
            .Advantages.data<float>().ToArray()); // Dr. GRPO never divides by the std
        Assert.Equal(new float[] { -2, 2, 0, 0 }, AdvantageEstimators.Get("rloo").Estimate(input).Advantages.data<float>().ToArray());
        Assert.Equal(AdvantageEstimators.ReinforcePlusPlus, AdvantageEstimators.Get("reinforce_pp").Name);
        Assert.True(AdvantageEstimators.Get("gae").NeedsValues);
        Assert.Throws<FineAlignException>(() => AdvantageEstimators.Get("gae").Estimate(input)); // no values
        var unknown = Assert.Throws<FineAlignException>(() => AdvantageEstimators.Get("vtrace"));
        Assert.Contains("gae, grpo, dr_grpo, rloo, reinforce++", unknown.Message);
        Assert.Equal(PolicyLosses.Token, PolicyLosses.Canonical("dapo"));
        Assert.Null(PolicyLosses.Find("nope"));
    }
}
