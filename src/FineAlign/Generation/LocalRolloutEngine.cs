using FineAlign.Models;
using FineAlign.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Generation;

/// <summary>
/// <see cref="IRolloutEngine"/> over an in-process model with the batched KV-cache sampler (<see cref="TextGenerator"/>):
/// every prompt is repeated <see cref="RolloutRequest.SamplesPerPrompt"/> times in a row and the whole request is
/// one batch with one seeded sampling stream, so the same request gives the same samples.
/// </summary>
/// <remarks>
/// <paramref name="rolloutDtype"/> (<c>--rollout-dtype bfloat16</c>, verl's <c>rollout.dtype</c>): sample from a copy of
/// the policy in that dtype — half the bytes per decode step — refreshed from the policy's current weights at every
/// request (a LoRA policy's adapters are folded in). Only the sampling changes: the trainers recompute every log-prob
/// with the fp32 policy (scoring pass), so the objective is the same function of the samples; the samples come from the
/// bf16 model's distribution, which the importance ratio of the first epoch does not correct (docs/DECODING.md).
/// </remarks>
public sealed class LocalRolloutEngine(CausalLM model, TextTokenizer? tokenizer = null, ScalarType? rolloutDtype = null) : IRolloutEngine
{
    /// <summary>The dtype rollouts are sampled in (null: the model's own).</summary>
    public ScalarType? RolloutDtype => rolloutDtype;

    public IReadOnlyList<RolloutSample> Generate(RolloutRequest request)
    {
        request.Validate();
        var rows = new List<int[]>(request.Count);
        foreach (var p in request.PromptIds)
            for (int j = 0; j < request.SamplesPerPrompt; j++) rows.Add(p);
        using var copy = CastCopy();
        var generated = TextGenerator.Generate(copy ?? model, rows, new GenerationOptions
        {
            MaxNewTokens = request.MaxNewTokens, DoSample = true, Temperature = request.Temperature, TopP = request.TopP,
            TopK = request.TopK, Seed = request.Seed, EosTokenIds = request.StopTokenIds,
        }, tokenizer);
        return generated.Select(g => new RolloutSample(g.Tokens, g.LogProbs,
            g.FinishReason == FinishReason.Length ? RolloutFinish.Length : RolloutFinish.Stop)).ToList();
    }

    /// <summary>
    /// Null when sampling from the policy itself; else a fresh copy in the rollout dtype holding the policy's current
    /// weights (adapters merged), made per request and disposed after it: the policy changes between requests, and a
    /// copy kept across a trainer step's dispose scope lost its weights (a per-request copy costs one cast of the weights).
    /// </summary>
    private CausalLM? CastCopy()
    {
        if (rolloutDtype is not ScalarType dtype || model.parameters().First().dtype == dtype) return null;
        // Built and filled on a pool thread: dispose scopes are per thread, and the caller (a trainer step) may have one open.
        return Task.Run(() =>
        {
            var copy = ModelFactory.Construct(model.Config, dtype);
            var source = model.Lora is null ? model.state_dict() : Lora.MergedTensors(model).ToDictionary(kv => kv.Key, kv => kv.Value);
            using (var scope = NewDisposeScope()) WeightCopy.Copy(source, copy, "rollout copy of the policy");
            copy.eval();
            return copy;
        }).GetAwaiter().GetResult();
    }
}
