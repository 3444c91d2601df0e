using FineAlign.Text;

namespace FineAlign.Data;

/// <summary>The layouts a prompt file for online RL (<c>finealign ppo --prompts</c>) may use.</summary>
public enum PromptFormat
{
    /// <summary><c>{"prompt": "..."}</c> (other fields ignored).</summary>
    Prompt,
    /// <summary>A paired-preference file (explicit <c>prompt</c> or HH-RLHF implicit prompt): its prompts.</summary>
    PreferencePairs,
    /// <summary>A binary-feedback file (<c>prompt</c> + <c>completion</c> + <c>label</c>): its distinct prompts.</summary>
    Feedback,
}

/// <summary>
/// Reads text prompts for online RL. Besides prompt-only lines it takes the prompts of preference and feedback
/// files, so the data of an rm/dpo/kto run can drive PPO unchanged; the line is validated by
/// <see cref="PreferenceReader"/> / <see cref="FeedbackReader"/>. One file must use one layout. Prompts must be
/// text: message lists and pre-tokenised ids are errors (they would need a chat template / have no text).
/// </summary>
public static class PromptReader
{
    public static IReadOnlyList<string> Read(string path) => ReadWithLines(path).Select(p => p.Prompt).ToList();

    /// <summary>
    /// Refuses, naming file:line, the first prompt that leaves no room for <paramref name="maxNewTokens"/> in the
    /// model's <paramref name="context"/> (BOS included), before any rollout or output exists. Without the check the
    /// run would start, write its folder and fail in the first generation with no line to fix.
    /// </summary>
    public static void CheckFit(string path, TextTokenizer tokenizer, int context, int maxNewTokens)
    {
        int budget = context - maxNewTokens, bos = tokenizer.AddBos && tokenizer.BosId is not null ? 1 : 0;
        if (budget < 1)
            throw new FineAlignException($"--max-new-tokens {maxNewTokens} leaves no room for a prompt in the model's context of {context} tokens");
        foreach (var (prompt, line) in ReadWithLines(path))
        {
            int n = tokenizer.Encode(prompt).Length + bos;
            if (n > budget)
                throw new DataFormatException(path, line, "prompt",
                    $"{n} tokens + --max-new-tokens {maxNewTokens} exceed the model's context of {context}; " +
                    $"set --max-prompt-length {budget} to keep each prompt's end, or lower --max-new-tokens");
        }
    }

    private static List<(string Prompt, long Line)> ReadWithLines(string path)
    {
        var single = new SingleFormat<PromptFormat>(path, Describe);
        var prompts = new List<(string, long)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in JsonlReader.Read(path))
        {
            var o = line.Object;
            PromptFormat format;
            string prompt;
            if (o.ContainsKey("chosen") || o.ContainsKey("rejected") || o.ContainsKey("chosen_input_ids") || o.ContainsKey("rejected_input_ids"))
            {
                format = PromptFormat.PreferencePairs;
                prompt = TextPrompt(PreferenceReader.Parse(line, path).Chosen, path, line.LineNumber);
            }
            else if (o.ContainsKey("completion") || o.ContainsKey("label") || o.ContainsKey("completion_input_ids"))
            {
                format = PromptFormat.Feedback;
                prompt = TextPrompt(FeedbackReader.Parse(line, path).Example, path, line.LineNumber);
            }
            else
            {
                format = PromptFormat.Prompt;
                prompt = line.RequireString(path, "prompt");
            }
            single.Check(format, line.LineNumber);
            // Feedback files repeat a prompt once per rated completion; sample each prompt once.
            if (format == PromptFormat.Feedback && !seen.Add(prompt)) continue;
            prompts.Add((prompt, line.LineNumber));
        }
        return prompts;
    }

    public static string Describe(PromptFormat f) => f switch
    {
        PromptFormat.Prompt => "'prompt' only",
        PromptFormat.PreferencePairs => "preference pairs ('chosen'+'rejected')",
        _ => "binary feedback ('prompt'+'completion'+'label')",
    };

    private static string TextPrompt(SftExample? example, string path, long line) => example switch
    {
        PromptCompletionExample pc => pc.Prompt,
        ChatExample => throw new DataFormatException(path, line, "prompt",
            "message lists are not supported as PPO prompts (they need a chat template); give text prompts"),
        _ => throw new DataFormatException(path, line, "prompt_input_ids", "pre-tokenised prompts are not supported as PPO prompts; give text prompts"),
    };

    /// <summary>The HH-RLHF marker of a user turn; <see cref="KeepEnd"/> prefers to start the kept text there.</summary>
    public const string HumanMarker = "\n\nHuman:";

    /// <summary>
    /// The end of <paramref name="prompt"/> that fits in <paramref name="maxTokens"/> tokens (BOS included when the
    /// tokenizer adds one): TRL's keep_end truncation, done on text because rollouts take text prompts. The cut is the
    /// longest fitting suffix, moved forward to the first "\n\nHuman:" turn inside it when there is one (so a
    /// dialogue starts at a turn, not mid-sentence). Unchanged when it already fits.
    /// </summary>
    public static string KeepEnd(string prompt, TextTokenizer tokenizer, int maxTokens)
    {
        if (maxTokens < 1) throw new ArgumentOutOfRangeException(nameof(maxTokens), "must be at least 1");
        int budget = maxTokens - (tokenizer.AddBos && tokenizer.BosId is not null ? 1 : 0);
        bool Fits(int start) => tokenizer.Encode(prompt[start..]).Length <= budget;
        if (Fits(0)) return prompt;
        // Smallest start whose suffix fits (token counts shrink as the suffix does).
        int lo = 1, hi = prompt.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) / 2;
            if (Fits(mid)) hi = mid; else lo = mid + 1;
        }
        if (lo < prompt.Length && char.IsLowSurrogate(prompt[lo])) lo++;
        int assistant = prompt.LastIndexOf(PreferenceReader.AssistantMarker, StringComparison.Ordinal);
        int turn = prompt.IndexOf(HumanMarker, lo, StringComparison.Ordinal);
        if (turn >= 0 && (assistant < 0 || turn < assistant)) lo = turn;
        return prompt[lo..];
    }
}
