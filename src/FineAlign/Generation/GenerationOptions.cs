namespace FineAlign.Generation;

/// <summary>How to decode. Defaults follow transformers' <c>GenerationConfig</c> where one exists.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>False (or <see cref="Temperature"/> = 0) means greedy decoding.</summary>
    public bool DoSample { get; init; } = true;

    public double Temperature { get; init; } = 1.0;

    /// <summary>Keep only the k most likely tokens; 0 disables.</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus sampling: keep the smallest set whose probability reaches p; 1 disables.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Fixes the sampling stream: same seed, same model, same prompts ⇒ same tokens.</summary>
    public long Seed { get; init; }

    /// <summary>Token ids that end a sequence (the model's EOS ids when null).</summary>
    public IReadOnlyList<int>? EosTokenIds { get; init; }

    /// <summary>Strings that end a sequence; the text is cut before them (needs a tokenizer).</summary>
    public IReadOnlyList<string>? StopStrings { get; init; }

    /// <summary>Use the KV cache (on by default; off recomputes the whole prefix every step).</summary>
    public bool UseCache { get; init; } = true;

    /// <summary>
    /// Called on the generating thread with (row, token id) as each new token of an unfinished row is chosen, before
    /// the call returns: lets a server stream tokens. Null (the default) costs nothing.
    /// </summary>
    public Action<int, int>? OnToken { get; init; }

    public bool IsGreedy => !DoSample || Temperature <= 0;

    public void Validate()
    {
        if (MaxNewTokens < 0) throw new FineAlignException($"max_new_tokens must be ≥ 0 (got {MaxNewTokens}).");
        if (double.IsNaN(Temperature) || Temperature < 0) throw new FineAlignException($"temperature must be ≥ 0 (got {Temperature}).");
        if (TopK < 0) throw new FineAlignException($"top_k must be ≥ 0 (got {TopK}).");
        if (!(TopP > 0 && TopP <= 1)) throw new FineAlignException($"top_p must be in (0, 1] (got {TopP}).");
    }
}

/// <summary>Why a sequence stopped.</summary>
public enum FinishReason { Length, Eos, StopString }

/// <summary>
/// One generated continuation. <see cref="Tokens"/> holds the new tokens including a final EOS
/// (RL objectives train on it); <see cref="Text"/> is the decoded continuation without special
/// tokens, cut before a stop string. <see cref="LogProbs"/>[i] = log p(Tokens[i] | prefix) under
/// the model's distribution at the sampling temperature, before top-k/top-p truncation — the
/// quantity PPO-style objectives recompute.
/// </summary>
public sealed record GeneratedSequence(int[] PromptIds, int[] Tokens, float[] LogProbs, string Text, FinishReason FinishReason);
