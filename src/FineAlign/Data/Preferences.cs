using System.Text.Json.Nodes;
using FineAlign.Text;

namespace FineAlign.Data;

/// <summary>The paired-preference layouts FineAlign reads (TRL's dataset conventions).</summary>
public enum PreferenceFormat
{
    /// <summary><c>{"prompt": "...", "chosen": "...", "rejected": "..."}</c></summary>
    PromptChosenRejected,
    /// <summary><c>{"prompt": [messages], "chosen": [messages], "rejected": [messages]}</c></summary>
    ConversationalPromptChosenRejected,
    /// <summary><c>{"chosen": "...", "rejected": "..."}</c>: whole transcripts sharing a prefix (Anthropic HH-RLHF);
    /// the prompt is everything up to the last "\n\nAssistant:" both share.</summary>
    ImplicitPrompt,
    /// <summary><c>{"chosen": [messages], "rejected": [messages]}</c>: the prompt is the messages both share.</summary>
    ConversationalImplicitPrompt,
    /// <summary><c>{"prompt_input_ids": [...], "chosen_input_ids": [...], "rejected_input_ids": [...]}</c>, used as given.</summary>
    Tokenized,
}

/// <summary>
/// One preference pair as read. Text formats fill <see cref="Chosen"/>/<see cref="Rejected"/> (SFT examples sharing
/// the prompt); <see cref="PreferenceFormat.Tokenized"/> fills the id arrays. <see cref="Margin"/> comes from an
/// optional numeric <c>margin</c> (or <c>score_chosen</c> − <c>score_rejected</c>) field.
/// </summary>
public sealed record PreferenceExample(long Line, PreferenceFormat Format, SftExample? Chosen, SftExample? Rejected,
                                       int[]? PromptIds = null, int[]? ChosenIds = null, int[]? RejectedIds = null, double? Margin = null)
{
    /// <summary>True when the pair carries no preference: a completion is empty (or blank) or both are identical.</summary>
    public string? NoSignalReason()
    {
        if (Format == PreferenceFormat.Tokenized)
        {
            if (ChosenIds!.Length == 0 || RejectedIds!.Length == 0) return "empty completion";
            return ChosenIds.AsSpan().SequenceEqual(RejectedIds) ? "chosen == rejected" : null;
        }
        if (IsBlank(Chosen!) || IsBlank(Rejected!)) return "empty completion";
        return CompletionText(Chosen!) == CompletionText(Rejected!) ? "chosen == rejected" : null;
    }

    internal static bool IsBlank(SftExample e) => e switch
    {
        PromptCompletionExample pc => string.IsNullOrWhiteSpace(pc.Completion),
        ChatExample ch => ch.Messages.Skip(ch.PromptCount).All(m => string.IsNullOrWhiteSpace(m.Content)),
        _ => true,
    };

    internal static string CompletionText(SftExample e) => e switch
    {
        PromptCompletionExample pc => pc.Completion,
        ChatExample ch => string.Join("\u0000", ch.Messages.Skip(ch.PromptCount).Select(m => m.Role + ":" + m.Content)),
        _ => "",
    };
}

/// <summary>
/// Reads paired-preference JSONL. The format is recognised per line from its fields; one file must use one format.
/// Wrong types, missing fields and mixed formats are errors naming file, line and field. Pairs without a preference
/// signal (blank completion, chosen == rejected) are returned and counted/skipped by <see cref="PreferenceEncoder"/>.
/// </summary>
public static class PreferenceReader
{
    /// <summary>The marker that ends a prompt in Anthropic HH-RLHF transcripts.</summary>
    public const string AssistantMarker = "\n\nAssistant:";

    public static IEnumerable<PreferenceExample> Read(string path)
    {
        var single = new SingleFormat<PreferenceFormat>(path, Describe);
        foreach (var line in JsonlReader.Read(path))
        {
            var ex = Parse(line, path);
            single.Check(ex.Format, line.LineNumber);
            yield return ex;
        }
    }

    public static string Describe(PreferenceFormat f) => f switch
    {
        PreferenceFormat.PromptChosenRejected => "'prompt'+'chosen'+'rejected' (strings)",
        PreferenceFormat.ConversationalPromptChosenRejected => "'prompt'+'chosen'+'rejected' (message lists)",
        PreferenceFormat.ImplicitPrompt => "'chosen'+'rejected' transcripts (implicit prompt)",
        PreferenceFormat.ConversationalImplicitPrompt => "'chosen'+'rejected' conversations (implicit prompt)",
        _ => "pre-tokenised 'prompt_input_ids'+'chosen_input_ids'+'rejected_input_ids'",
    };

    public static PreferenceExample Parse(JsonlLine line, string file)
    {
        var o = line.Object;
        double? margin = ReadMargin(line, file);
        if (o.ContainsKey("chosen_input_ids") || o.ContainsKey("rejected_input_ids") || o.ContainsKey("prompt_input_ids"))
        {
            var p = line.RequireIntArray(file, "prompt_input_ids");
            var c = line.RequireIntArray(file, "chosen_input_ids");
            var r = line.RequireIntArray(file, "rejected_input_ids");
            return new PreferenceExample(line.LineNumber, PreferenceFormat.Tokenized, null, null, p, c, r, margin);
        }
        if (!o.ContainsKey("chosen") && !o.ContainsKey("rejected"))
            throw new DataFormatException(file, line.LineNumber, null,
                "no preference fields: expected 'chosen'+'rejected' (with or without 'prompt') or 'prompt_input_ids'+'chosen_input_ids'+'rejected_input_ids'");
        if (!o.ContainsKey("chosen")) throw JsonlReader.Wrong(line, file, "chosen", "a string or a list of messages");
        if (!o.ContainsKey("rejected")) throw JsonlReader.Wrong(line, file, "rejected", "a string or a list of messages");

        if (o.ContainsKey("prompt"))
        {
            if (o["prompt"] is JsonArray)
            {
                var prompt = Messages(line, file, "prompt");
                var c = Messages(line, file, "chosen");
                var r = Messages(line, file, "rejected");
                return new PreferenceExample(line.LineNumber, PreferenceFormat.ConversationalPromptChosenRejected,
                    new ChatExample(line.LineNumber, [.. prompt, .. c], prompt.Count), new ChatExample(line.LineNumber, [.. prompt, .. r], prompt.Count),
                    Margin: margin);
            }
            string ps = line.RequireString(file, "prompt");
            if (ps.Length == 0) throw new DataFormatException(file, line.LineNumber, "prompt", "is empty");
            string cs = line.RequireString(file, "chosen"), rs = line.RequireString(file, "rejected");
            return new PreferenceExample(line.LineNumber, PreferenceFormat.PromptChosenRejected,
                new PromptCompletionExample(line.LineNumber, ps, cs), new PromptCompletionExample(line.LineNumber, ps, rs), Margin: margin);
        }

        if (o["chosen"] is JsonArray)
        {
            var c = Messages(line, file, "chosen");
            var r = Messages(line, file, "rejected");
            int shared = 0;
            while (shared < Math.Min(c.Count, r.Count) && c[shared] == r[shared]) shared++;
            if (shared == c.Count && shared == r.Count)
                return new PreferenceExample(line.LineNumber, PreferenceFormat.ConversationalImplicitPrompt,  // identical: no signal
                    new ChatExample(line.LineNumber, c, c.Count - 1), new ChatExample(line.LineNumber, r, r.Count - 1), Margin: margin);
            if (shared == 0)
                throw new DataFormatException(file, line.LineNumber, "chosen", "shares no leading message with 'rejected': no implicit prompt");
            foreach (var (msgs, name) in new[] { (c, "chosen"), (r, "rejected") })
                if (msgs.Count == shared || msgs[shared].Role != "assistant")
                    throw new DataFormatException(file, line.LineNumber, $"{name}[{shared}]",
                        "the messages after the shared prompt must start with an assistant reply");
            return new PreferenceExample(line.LineNumber, PreferenceFormat.ConversationalImplicitPrompt,
                new ChatExample(line.LineNumber, c, shared), new ChatExample(line.LineNumber, r, shared), Margin: margin);
        }

        string chosen = line.RequireString(file, "chosen"), rejected = line.RequireString(file, "rejected");
        var (promptText, cc, rc) = SplitImplicitPrompt(chosen, rejected)
            ?? throw new DataFormatException(file, line.LineNumber, "chosen",
                $"no shared prompt: 'chosen' and 'rejected' must share a prefix ending in \"{AssistantMarker.Trim()}\" (Anthropic HH-RLHF layout), or give a 'prompt' field");
        return new PreferenceExample(line.LineNumber, PreferenceFormat.ImplicitPrompt,
            new PromptCompletionExample(line.LineNumber, promptText, cc), new PromptCompletionExample(line.LineNumber, promptText, rc), Margin: margin);
    }

    /// <summary>
    /// Splits two transcripts at the last "\n\nAssistant:" inside their common prefix: (prompt, chosen reply, rejected reply).
    /// Null when they share no such marker.
    /// </summary>
    public static (string Prompt, string Chosen, string Rejected)? SplitImplicitPrompt(string chosen, string rejected)
    {
        int common = 0, n = Math.Min(chosen.Length, rejected.Length);
        while (common < n && chosen[common] == rejected[common]) common++;
        int at = chosen.LastIndexOf(AssistantMarker, Math.Max(0, common - 1), StringComparison.Ordinal);
        while (at >= 0 && at + AssistantMarker.Length > common)
            at = at == 0 ? -1 : chosen.LastIndexOf(AssistantMarker, at - 1, StringComparison.Ordinal);
        if (at < 0) return null;
        int end = at + AssistantMarker.Length;
        return (chosen[..end], chosen[end..], rejected[end..]);
    }

    private static double? ReadMargin(JsonlLine line, string file)
    {
        var o = line.Object;
        if (o.ContainsKey("margin") && o["margin"] is not null) return line.RequireFloat32(file, "margin");
        if (o.ContainsKey("score_chosen") || o.ContainsKey("score_rejected"))
            return JsonlReader.CheckFloat32(line.RequireNumber(file, "score_chosen") - line.RequireNumber(file, "score_rejected"),
                file, line.LineNumber, "score_chosen − score_rejected");
        return null;
    }

    /// <summary>A non-empty list of {role, content} messages (roles system/user/assistant, non-empty content).</summary>
    internal static List<ChatMessage> Messages(JsonlLine line, string file, string field)
    {
        if (line.Object[field] is not JsonArray arr) throw JsonlReader.Wrong(line, file, field, "a list of messages");
        if (arr.Count == 0) throw new DataFormatException(file, line.LineNumber, field, "is an empty list");
        var result = new List<ChatMessage>(arr.Count);
        for (int i = 0; i < arr.Count; i++)
        {
            string where = $"{field}[{i}]";
            if (arr[i] is not JsonObject m)
                throw new DataFormatException(file, line.LineNumber, where, $"expected an object with 'role' and 'content', got {JsonlReader.Kind(arr[i])}");
            string role = Str(m, "role"), content = Str(m, "content");
            if (role is not ("system" or "user" or "assistant"))
                throw new DataFormatException(file, line.LineNumber, where + ".role", $"'{role}' is not system, user or assistant");
            result.Add(new ChatMessage(role, content));

            string Str(JsonObject obj, string key) =>
                obj[key] is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.String
                    ? v.GetValue<string>()
                    : throw new DataFormatException(file, line.LineNumber, $"{where}.{key}",
                        obj.ContainsKey(key) ? $"expected a string, got {JsonlReader.Kind(obj[key])}" : "missing (expected a string)");
        }
        return result;
    }
}

/// <summary>A prompt and a completion as token ids; <see cref="CompletionMask"/> marks the completion tokens that are scored.</summary>
public sealed record EncodedSequence(int[] Prompt, int[] Completion, bool[] CompletionMask)
{
    public int Length => Prompt.Length + Completion.Length;

    /// <summary>prompt + completion with the loss mask on scored completion tokens.</summary>
    public TokenizedExample ToExample() => new([.. Prompt, .. Completion], [.. new bool[Prompt.Length], .. CompletionMask]);

    /// <summary>This prompt followed by another sequence's completion (KTO's mismatched pairs).</summary>
    public EncodedSequence WithCompletionOf(EncodedSequence other) => new(Prompt, other.Completion, other.CompletionMask);

    /// <summary>Number of scored completion tokens.</summary>
    public int ScoredTokens => CompletionMask.Count(m => m);
}

/// <summary>A tokenised preference pair (<see cref="Line"/> = its line in the file, 0 for built-in data).</summary>
public sealed record EncodedPair(long Line, EncodedSequence Chosen, EncodedSequence Rejected, double Margin);

/// <summary>How preference/feedback examples become token sequences.</summary>
public sealed record PreferenceEncoding
{
    /// <summary>Maximum prompt + completion tokens; longer completions are cut at the end.</summary>
    public int MaxLength { get; init; } = 1024;
    /// <summary>Keep at most this many prompt tokens (the end of the prompt, as TRL's keep_end); null = no limit.</summary>
    public int? MaxPromptLength { get; init; }
    /// <summary>Chat format for message data (chatml, llama2, zephyr); null = from the tokenizer.</summary>
    public string? ChatTemplate { get; init; }
    /// <summary>The model folder, where chat_template.jinja and named templates are looked up, as for SFT (null: only the tokenizer's template).</summary>
    public string? TemplateFolder { get; init; }
}

/// <summary>What encoding dropped or changed, reported once at the end of loading.</summary>
public sealed class EncodingReport
{
    public int Read { get; set; }
    public int Truncated { get; set; }
    public int SkippedNoSignal { get; set; }
    public int SkippedTooLong { get; set; }
    public long FirstNoSignalLine { get; set; }
    public long FirstTooLongLine { get; set; }

    /// <summary>One summary line, or null when nothing was dropped or cut.</summary>
    public string? Summary(string source, PreferenceEncoding o)
    {
        var parts = new List<string>();
        if (SkippedNoSignal > 0) parts.Add($"{SkippedNoSignal} skipped with no preference signal (blank completion or chosen == rejected; first at line {FirstNoSignalLine})");
        if (SkippedTooLong > 0) parts.Add($"{SkippedTooLong} skipped because the prompt leaves no completion token within {o.MaxLength} tokens (first at line {FirstTooLongLine}; set --max-prompt-length to keep the prompt's end)");
        if (Truncated > 0) parts.Add($"{Truncated} truncated to fit {o.MaxLength} tokens" + (o.MaxPromptLength is int p ? $" / prompt {p}" : ""));
        return parts.Count == 0 ? null : $"{source}: of {Read} examples, " + string.Join("; ", parts);
    }
}

/// <summary>
/// Tokenises preference pairs and feedback examples: text through <see cref="SftEncoder"/> (completion-only mask:
/// [BOS] prompt completion EOS, or the chat template), pre-tokenised ids as given (completion all scored).
/// </summary>
public sealed class PreferenceEncoder
{
    private readonly SftEncoder _sft;

    public PreferenceEncoder(TextTokenizer tokenizer, PreferenceEncoding options)
    {
        if (options.MaxLength < 2) throw new FineAlignException($"max length must be at least 2 (got {options.MaxLength})");
        if (options.MaxPromptLength is < 1) throw new FineAlignException($"max prompt length must be at least 1 (got {options.MaxPromptLength})");
        Options = options;
        _vocab = tokenizer.VocabSize;
        _sft = new SftEncoder(tokenizer, new SftOptions { MaxLength = options.MaxLength, CompletionOnlyLoss = true, ChatTemplate = options.ChatTemplate,
                                                       TemplateFolder = options.TemplateFolder });
    }

    public PreferenceEncoding Options { get; }

    /// <summary>Ids accepted in pre-tokenised data: [0, VocabSize) of the tokenizer.</summary>
    public int VocabSize => _vocab;
    private readonly int _vocab;

    /// <summary>An SFT example split at its first scored token into prompt and completion (no length limit).</summary>
    public EncodedSequence EncodeFull(SftExample example, string file)
    {
        var t = _sft.EncodeFull(example, file);
        int k = Array.IndexOf(t.LossMask, true);
        if (k < 0) throw new DataFormatException(file, example.Line, null, "no completion token to score");
        return new EncodedSequence(t.InputIds[..k], t.InputIds[k..], t.LossMask[k..]);
    }

    /// <summary>Applies the prompt and total length limits; null when no scored completion token is left.</summary>
    public EncodedSequence? Fit(EncodedSequence s, out bool truncated)
    {
        truncated = false;
        var prompt = s.Prompt;
        if (Options.MaxPromptLength is int mp && prompt.Length > mp) { prompt = prompt[^mp..]; truncated = true; }
        int room = Options.MaxLength - prompt.Length;
        var completion = s.Completion;
        var mask = s.CompletionMask;
        if (room < completion.Length)
        {
            if (room <= 0) return null;
            completion = completion[..room];
            mask = mask[..room];
            truncated = true;
        }
        return mask.Contains(true) ? new EncodedSequence(prompt, completion, mask) : null;
    }

    /// <summary>Encodes one pair with the length limits applied (null = skipped; the report says why).</summary>
    public EncodedPair? Encode(PreferenceExample ex, string file, EncodingReport report)
    {
        report.Read++;
        if (ex.Format == PreferenceFormat.Tokenized)
        {
            JsonlReader.CheckTokenIds(ex.PromptIds, _vocab, file, ex.Line, "prompt_input_ids");
            JsonlReader.CheckTokenIds(ex.ChosenIds, _vocab, file, ex.Line, "chosen_input_ids");
            JsonlReader.CheckTokenIds(ex.RejectedIds, _vocab, file, ex.Line, "rejected_input_ids");
        }
        if (ex.NoSignalReason() is not null)
        {
            if (report.SkippedNoSignal++ == 0) report.FirstNoSignalLine = ex.Line;
            return null;
        }
        EncodedSequence c, r;
        if (ex.Format == PreferenceFormat.Tokenized)
        {
            c = new EncodedSequence(ex.PromptIds!, ex.ChosenIds!, Enumerable.Repeat(true, ex.ChosenIds!.Length).ToArray());
            r = new EncodedSequence(ex.PromptIds!, ex.RejectedIds!, Enumerable.Repeat(true, ex.RejectedIds!.Length).ToArray());
        }
        else
        {
            c = EncodeFull(ex.Chosen!, file);
            r = EncodeFull(ex.Rejected!, file);
        }
        var fc = Fit(c, out bool tc);
        var fr = Fit(r, out bool tr);
        if (fc is null || fr is null)
        {
            if (report.SkippedTooLong++ == 0) report.FirstTooLongLine = ex.Line;
            return null;
        }
        if (tc || tr) report.Truncated++;
        return new EncodedPair(ex.Line, fc, fr, ex.Margin ?? 0);
    }
}

/// <summary>A tokenised preference file (or the built-in pairs).</summary>
public sealed record PreferenceDataset(string Source, PreferenceFormat Format, IReadOnlyList<EncodedPair> Pairs, EncodingReport Report)
{
    /// <summary>Whether any pair had an explicit margin field.</summary>
    public bool HasMargins => Pairs.Any(p => p.Margin != 0);

    /// <summary>Reads, validates and tokenises <paramref name="path"/>; one warning summarises skipped/truncated pairs.</summary>
    public static PreferenceDataset Load(string path, TextTokenizer tokenizer, PreferenceEncoding options, Action<string>? warn = null)
        => FromExamples(PreferenceReader.Read(path), path, tokenizer, options, warn);

    public static PreferenceDataset FromExamples(IEnumerable<PreferenceExample> examples, string source, TextTokenizer tokenizer,
                                                 PreferenceEncoding options, Action<string>? warn = null)
    {
        var encoder = new PreferenceEncoder(tokenizer, options);
        var report = new EncodingReport();
        var pairs = new List<EncodedPair>();
        PreferenceFormat format = PreferenceFormat.PromptChosenRejected;
        foreach (var ex in examples)
        {
            format = ex.Format;
            if (encoder.Encode(ex, source, report) is EncodedPair p) pairs.Add(p);
        }
        if (report.Read == 0) throw new FineAlignException($"{source}: no preference pairs (the file is empty)");
        if (report.Summary(source, options) is string s) warn?.Invoke(s);
        if (pairs.Count == 0) throw new FineAlignException($"{source}: every pair was skipped ({report.Summary(source, options)})");
        return new PreferenceDataset(source, format, pairs, report);
    }
}
