using FineAlign.Text;

namespace FineAlign.Generation;

/// <summary>
/// What an online-RL step asks a generation backend for: prompts as token ids (never re-tokenised), several samples
/// per prompt, and the sampling knobs every OpenAI-compatible <c>/v1/completions</c> server understands
/// (<c>prompt</c> as token arrays, <c>n</c>, <c>max_tokens</c>, <c>temperature</c>, <c>top_p</c>, <c>top_k</c>, <c>seed</c>, stop token ids).
/// </summary>
public sealed record RolloutRequest
{
    /// <summary>One token-id array per prompt (BOS included when the tokenizer adds one).</summary>
    public required IReadOnlyList<int[]> PromptIds { get; init; }
    /// <summary>Samples per prompt (GRPO's G; 1 for PPO). Results are prompt-major: sample j of prompt i is at i · n + j.</summary>
    public int SamplesPerPrompt { get; init; } = 1;
    public int MaxNewTokens { get; init; } = 64;
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    /// <summary>0 disables.</summary>
    public int TopK { get; init; }
    /// <summary>Fixes the sampling stream of the whole request.</summary>
    public long Seed { get; init; }
    /// <summary>Tokens that end a sample (kept as its last token); the model's EOS ids when null.</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }

    public int Count => PromptIds.Count * SamplesPerPrompt;

    public void Validate()
    {
        if (PromptIds.Count == 0) throw new FineAlignException("a rollout request needs at least one prompt");
        if (SamplesPerPrompt < 1) throw new FineAlignException($"samples per prompt must be at least 1 (got {SamplesPerPrompt})");
        for (int i = 0; i < PromptIds.Count; i++)
            if (PromptIds[i].Length == 0) throw new FineAlignException($"prompt {i + 1} is empty; generation needs at least one token.");
    }
}

/// <summary>Why a sample ended, in the OpenAI API's words.</summary>
public enum RolloutFinish
{
    /// <summary>A stop token (EOS) was produced; it is the sample's last token.</summary>
    Stop,
    /// <summary>The <see cref="RolloutRequest.MaxNewTokens"/> limit cut the sample.</summary>
    Length,
}

/// <summary>
/// One sampled response. <see cref="LogProbs"/> are the engine's own per-token log-probs at the sampling temperature
/// when it reports them (null otherwise); trainers recompute log-probs with the policy, so they are informational.
/// </summary>
public sealed record RolloutSample(int[] ResponseIds, float[]? LogProbs, RolloutFinish Finish);

/// <summary>
/// The seam through which online RL generates. Today: <see cref="LocalRolloutEngine"/> (the in-process KV-cache
/// sampler over the policy being trained). A remote engine (an OpenAI-compatible server holding a copy of the
/// policy) implements the same call; keeping its weights in sync is the caller's business.
/// </summary>
public interface IRolloutEngine
{
    /// <summary>Samples <see cref="RolloutRequest.Count"/> responses, prompt-major.</summary>
    IReadOnlyList<RolloutSample> Generate(RolloutRequest request);
}

/// <summary>Helpers over any <see cref="IRolloutEngine"/>.</summary>
public static class RolloutEngines
{
    /// <summary>
    /// The request's samples as <see cref="GeneratedSequence"/>s (prompt-major, texts decoded without special tokens), the
    /// shape decoding-time methods and evaluation read. Log-probs: the engine's own (a remote server's are temperature 1;
    /// missing ones are NaN) — informational only, every caller that needs log-probs recomputes them.
    /// </summary>
    public static IReadOnlyList<GeneratedSequence> Sequences(this IRolloutEngine engine, RolloutRequest request, TextTokenizer tokenizer)
    {
        var samples = engine.Generate(request);
        if (samples.Count != request.Count)
            throw new FineAlignException($"the rollout engine returned {samples.Count} samples for {request.Count} requested");
        int n = request.SamplesPerPrompt;
        return samples.Select((s, k) => new GeneratedSequence(request.PromptIds[k / n], s.ResponseIds,
            s.LogProbs ?? Enumerable.Repeat(float.NaN, s.ResponseIds.Length).ToArray(), tokenizer.Decode(s.ResponseIds),
            s.Finish == RolloutFinish.Stop ? FinishReason.Eos : FinishReason.Length)).ToList();
    }
}
