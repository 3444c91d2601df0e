using System.Text.Json.Nodes;
using FineAlign.Text;

namespace FineAlign.Data;

/// <summary>The layouts a prompt file for online RL (<c>finealign ppo --prompts</c>) may use.</summary>
public enum PromptFormat
{
    /// <summary><c>{"prompt": "..."}</c> (other fields ignored).</summary>
    Prompt,
    /// <summary>Conversational: <c>{"prompt": [messages]}</c> (TRL) or <c>{"messages": [...]}</c>, rendered with the chat template.</summary>
    Conversational,
    /// <summary>A paired-preference file (explicit <c>prompt</c> or HH-RLHF implicit prompt): its prompts.</summary>
    PreferencePairs,
    /// <summary>A binary-feedback file (<c>prompt</c> + <c>completion</c> + <c>label</c>): its distinct prompts.</summary>
    Feedback,
}

/// <summary>
/// Reads prompts for online RL and generation. Besides prompt-only lines it takes the prompts of preference and feedback
/// files, so the data of an rm/dpo/kto run can drive PPO unchanged; the line is validated by
/// <see cref="PreferenceReader"/> / <see cref="FeedbackReader"/>. Conversational prompts (TRL's <c>prompt</c> as a
/// message list, or <c>messages</c>, whose trailing assistant replies are dropped) are rendered by the chat template with
/// its generation prompt, so the text ends where the model's reply starts. One file must use one layout.
/// Pre-tokenised ids are an error (they have no text).
/// </summary>
public static class PromptReader
{
    /// <summary>Text prompts only (a message list is an error).</summary>
    public static IReadOnlyList<string> Read(string path) => Read(path, null);

    /// <summary>
    /// Prompts as text; <paramref name="chat"/> gives the chat template for conversational lines (asked for only when
    /// one is met, so text-only files need none).
    /// </summary>
    public static IReadOnlyList<string> Read(string path, Func<ChatTemplate>? chat) => ReadDetailed(path, chat).Prompts;

    /// <summary>As <see cref="Read(string, Func{ChatTemplate}?)"/>, also saying whether any prompt was a chat (generation then stops at the end-of-turn token).</summary>
    public static (IReadOnlyList<string> Prompts, bool AnyChat) ReadDetailed(string path, Func<ChatTemplate>? chat)
    {
        var (prompts, anyChat) = ReadWithLines(path, chat);
        return (prompts.Select(p => p.Prompt).ToList(), anyChat);
    }

    /// <summary>
    /// The prompts with their line numbers and their rows' other fields (<see cref="PromptRow.Columns"/>), which reward
    /// specs such as <c>exact-match:solution</c> read — as TRL hands a dataset's columns to its reward functions.
    /// </summary>
    public static (IReadOnlyList<PromptRow> Rows, bool AnyChat) ReadRows(string path, Func<ChatTemplate>? chat = null)
    {
        var (prompts, anyChat) = ReadWithLines(path, chat);
        return (prompts.Select(p => new PromptRow(p.Prompt, p.Line, p.Columns)).ToList(), anyChat);
    }

    /// <summary>
    /// Refuses, naming file, line and field, the first row without one of <paramref name="columns"/> (a JSON null counts as
    /// missing); <paramref name="reader"/> says who reads it (e.g. "the reward 'numeric:solution'").
    /// </summary>
    public static void RequireColumns(string path, IReadOnlyList<PromptRow> rows, IReadOnlyList<string> columns, Func<string, string> reader,
        Func<string, string, string?>? problem = null)
    {
        foreach (var row in rows)
            foreach (var c in columns)
            {
                if (!row.Columns.TryGetValue(c, out var value))
                    throw new DataFormatException(path, row.Line, c, $"missing; {reader(c)} reads this column of every prompt row");
                if (problem?.Invoke(c, value) is string why) throw new DataFormatException(path, row.Line, c, why);
            }
    }

    /// <summary>
    /// Refuses, naming file:line, the first prompt that leaves no room for <paramref name="maxNewTokens"/> in the
    /// model's <paramref name="context"/> (BOS included), before any rollout or output exists. Without the check the
    /// run would start, write its folder and fail in the first generation with no line to fix.
    /// </summary>
    public static void CheckFit(string path, TextTokenizer tokenizer, int context, int maxNewTokens, Func<ChatTemplate>? chat = null)
    {
        int budget = context - maxNewTokens, bos = tokenizer.AddBos && tokenizer.BosId is not null ? 1 : 0;
        if (budget < 1)
            throw new FineAlignException($"--max-new-tokens {maxNewTokens} leaves no room for a prompt in the model's context of {context} tokens");
        foreach (var (prompt, line, _) in ReadWithLines(path, chat).Prompts)
        {
            int n = tokenizer.Encode(prompt).Length + bos;
            if (n > budget)
                throw new DataFormatException(path, line, "prompt",
                    $"{n} tokens + --max-new-tokens {maxNewTokens} exceed the model's context of {context}; " +
                    $"set --max-prompt-length {budget} to keep each prompt's end, or lower --max-new-tokens");
        }
    }

    private static (List<(string Prompt, long Line, IReadOnlyDictionary<string, string> Columns)> Prompts, bool AnyChat) ReadWithLines(string path, Func<ChatTemplate>? chat)
    {
        var single = new SingleFormat<PromptFormat>(path, Describe);
        var prompts = new List<(string, long, IReadOnlyDictionary<string, string>)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        ChatTemplate? template = null;
        bool anyChat = false;
        foreach (var line in JsonlReader.Read(path))
        {
            var o = line.Object;
            PromptFormat format;
            string prompt;
            string Render(IReadOnlyList<ChatMessage> messages, string field)
            {
                if (chat is null)
                    throw new DataFormatException(path, line.LineNumber, field, "message lists need a chat template; give text prompts or use a command that takes --chat-template");
                template ??= chat();
                anyChat = true;
                try { return template.PromptText(messages); }
                catch (FineAlignException e) when (ChatTemplateRefusal.Is(e)) { throw new DataFormatException(path, line.LineNumber, field, e.Message); }
            }
            if (o.ContainsKey("chosen") || o.ContainsKey("rejected") || o.ContainsKey("chosen_input_ids") || o.ContainsKey("rejected_input_ids"))
            {
                format = PromptFormat.PreferencePairs;
                prompt = PromptOf(PreferenceReader.Parse(line, path).Chosen, path, line.LineNumber, Render);
            }
            else if (o.ContainsKey("completion") || o.ContainsKey("label") || o.ContainsKey("completion_input_ids"))
            {
                format = PromptFormat.Feedback;
                prompt = PromptOf(FeedbackReader.Parse(line, path).Example, path, line.LineNumber, Render);
            }
            else if (o["prompt"] is JsonArray || (!o.ContainsKey("prompt") && o.ContainsKey("messages")))
            {
                format = PromptFormat.Conversational;
                string field = o.ContainsKey("prompt") ? "prompt" : "messages";
                var messages = SftReader.ParseMessages(line, path, field);
                var head = WithoutTrailingReplies(messages);
                if (head.Count == 0) throw new DataFormatException(path, line.LineNumber, field, "has only assistant messages: no prompt to reply to");
                prompt = Render(head, field);
            }
            else
            {
                format = PromptFormat.Prompt;
                prompt = line.RequireString(path, "prompt");
            }
            single.Check(format, line.LineNumber);
            // Feedback files repeat a prompt once per rated completion; sample each prompt once.
            if (format == PromptFormat.Feedback && !seen.Add(prompt)) continue;
            prompts.Add((prompt, line.LineNumber, PromptRow.ColumnsOf(o)));
        }
        return (prompts, anyChat);
    }

    private static List<ChatMessage> WithoutTrailingReplies(IReadOnlyList<ChatMessage> messages)
    {
        int n = messages.Count;
        while (n > 0 && messages[n - 1].Role == "assistant") n--;
        return messages.Take(n).ToList();
    }

    public static string Describe(PromptFormat f) => f switch
    {
        PromptFormat.Prompt => "'prompt' only",
        PromptFormat.Conversational => "conversational ('prompt' or 'messages' as message lists)",
        PromptFormat.PreferencePairs => "preference pairs ('chosen'+'rejected')",
        _ => "binary feedback ('prompt'+'completion'+'label')",
    };

    private static string PromptOf(SftExample? example, string path, long line, Func<IReadOnlyList<ChatMessage>, string, string> render) => example switch
    {
        PromptCompletionExample pc => pc.Prompt,
        ChatExample c => render(c.PromptCount > 0 ? c.Messages.Take(c.PromptCount).ToList() : WithoutTrailingReplies(c.Messages), "prompt"),
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

/// <summary>
/// One prompt of a prompt file, its line, and the row's other top-level fields as text (a JSON string as is, anything
/// else as its JSON; nulls left out): the dataset columns a reward may read, e.g. <c>solution</c>.
/// </summary>
public sealed record PromptRow(string Prompt, long Line, IReadOnlyDictionary<string, string> Columns)
{
    /// <summary>The fields that are not the prompt itself.</summary>
    public static IReadOnlyDictionary<string, string> ColumnsOf(JsonObject o)
    {
        var columns = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in o)
        {
            if (key is "prompt" or "messages" || value is null) continue;
            columns[key] = value is JsonValue v && v.TryGetValue(out string? text) ? text : value.ToJsonString();
        }
        return columns;
    }
}
