using FineAlign.Text;

namespace FineAlign.Data;

/// <summary>What to do with an example longer than the maximum length.</summary>
public enum OverLengthPolicy
{
    /// <summary>Keep the first MaxLength tokens; a summary warning gives the count.</summary>
    Truncate,
    /// <summary>Stop with a <see cref="DataFormatException"/> naming the line and the lengths.</summary>
    Error,
}

/// <summary>How SFT examples become token sequences.</summary>
public sealed record SftOptions
{
    /// <summary>Maximum tokens per example (BOS and EOS included).</summary>
    public int MaxLength { get; init; } = 1024;
    /// <summary>
    /// True (default): loss on completion tokens only (for chats: assistant replies with their end marker).
    /// False: loss on every token but the first.
    /// </summary>
    public bool CompletionOnlyLoss { get; init; } = true;
    public OverLengthPolicy OverLength { get; init; } = OverLengthPolicy.Truncate;
    /// <summary>
    /// --chat-template: a preset (chatml, llama2, zephyr), a template file, or one of the model's named templates;
    /// null = the model's own template (see <see cref="ChatTemplates.Resolve"/>).
    /// </summary>
    public string? ChatTemplate { get; init; }
    /// <summary>The model folder, where chat_template.jinja and named templates are looked up (null: only the tokenizer's template).</summary>
    public string? TemplateFolder { get; init; }
    /// <summary>Extra template variables (transformers' apply_chat_template kwargs: enable_thinking, tools, ...).</summary>
    public IReadOnlyDictionary<string, object?>? ChatTemplateKwargs { get; init; }
}

/// <summary>
/// Tokenizes SFT examples. Prompt-completion: [BOS] prompt completion EOS, BOS per tokenizer.AddBos,
/// targets = completion + EOS. Text: [BOS] text EOS, all targets. Chats: rendered by the model's Jinja chat template
/// (<see cref="ChatTemplate"/>); targets = assistant replies and their end-of-turn token (for conversational
/// prompt-completion only those in the completion). The first token is never a target.
/// </summary>
public sealed class SftEncoder
{
    private readonly TextTokenizer _tok;
    private ChatTemplate? _chat;

    public SftEncoder(TextTokenizer tokenizer, SftOptions options)
    {
        if (options.MaxLength < 2) throw new FineAlignException($"max length must be at least 2 (got {options.MaxLength})");
        _tok = tokenizer;
        Options = options;
    }

    public SftOptions Options { get; }

    /// <summary>The chat template in use (resolved on first use from the options or the tokenizer).</summary>
    public ChatTemplate Chat => _chat ??= ChatTemplates.Resolve(Options.ChatTemplate, _tok, Options.TemplateFolder, Options.ChatTemplateKwargs);

    /// <summary>The whole example, without applying the length limit.</summary>
    public TokenizedExample EncodeFull(SftExample example, string file = "<input>") => EncodeUpTo(example, file, int.MaxValue, out _);

    // The first `limit` tokens of the example and its full length. Prompt/completion and text examples are assembled
    // straight into arrays of the kept length, so a very long document costs its token ids once, not again in lists.
    private TokenizedExample EncodeUpTo(SftExample example, string file, int limit, out int fullLength)
    {
        bool all = !Options.CompletionOnlyLoss;
        switch (example)
        {
            case PromptCompletionExample pc:
                return Assemble(_tok.Encode(pc.Prompt), all, _tok.EncodeContinuation(pc.Completion), limit, out fullLength);
            case TextExample t:
                return Assemble([], false, _tok.Encode(t.Text), limit, out fullLength);
            case ChatExample c:
            {
                var chat = Chat;  // outside the try: a missing or broken template is not this line's error
                TokenizedExample encoded;
                try { encoded = chat.EncodeConversation(c.Messages, c.PromptCount, all); }
                catch (FineAlignException e) when (ChatTemplateRefusal.Is(e))
                {
                    throw new DataFormatException(file, c.Line, c.PromptCount == 0 ? "messages" : "prompt/completion", e.Message);
                }
                fullLength = encoded.Length;
                return encoded;
            }
            default:
                throw new ArgumentException($"unknown example type {example.GetType().Name}");
        }
    }

    /// <summary>[BOS] prompt: the ids a prompt-completion model generates from (a prefix of its training sequence).</summary>
    public int[] EncodePrompt(string prompt)
    {
        var ids = new List<int>();
        if (_tok.AddBos && _tok.BosId is int bos) ids.Add(bos);
        ids.AddRange(_tok.Encode(prompt));
        return ids.ToArray();
    }

    /// <summary>A chat prompt with the generation prompt, in this encoder's chat template.</summary>
    public int[] EncodePrompt(IReadOnlyList<ChatMessage> messages) => Chat.EncodePrompt(messages);

    /// <summary>
    /// The example with the length policy applied; <paramref name="truncated"/> tells whether it was cut.
    /// Returns null when truncation left no target token (the caller skips it).
    /// </summary>
    public TokenizedExample? Encode(SftExample example, string file, out bool truncated)
    {
        var full = EncodeUpTo(example, file, Options.MaxLength, out int length);
        truncated = false;
        if (length > Options.MaxLength)
        {
            if (Options.OverLength == OverLengthPolicy.Error)
                throw new DataFormatException(file, example.Line, null,
                    $"example is {length} tokens, longer than the maximum length {Options.MaxLength} (raise the max length or choose truncation)");
            truncated = true;
            if (full.Length > Options.MaxLength)
                full = new TokenizedExample(full.InputIds[..Options.MaxLength], full.LossMask[..Options.MaxLength]);
        }
        return full.LossMask.Contains(true) ? full : null;
    }

    // [BOS] prompt completion EOS, cut to `limit`; the first token is never a target.
    private TokenizedExample Assemble(int[] prompt, bool promptTargets, int[] completion, int limit, out int fullLength)
    {
        int bos = _tok.AddBos && _tok.BosId is int b ? b : -1;
        int eos = RequireEos();
        fullLength = (bos >= 0 ? 1 : 0) + prompt.Length + completion.Length + 1;
        int n = Math.Min(fullLength, limit);
        var ids = new int[n];
        var mask = new bool[n];
        int at = 0;
        if (bos >= 0 && at < n) ids[at++] = bos;
        foreach (var (part, target) in new[] { (prompt, promptTargets), (completion, true) })
        {
            int take = Math.Min(part.Length, n - at);
            Array.Copy(part, 0, ids, at, take);
            mask.AsSpan(at, take).Fill(target);
            at += take;
        }
        if (at < n) { ids[at] = eos; mask[at] = true; }
        if (n > 0) mask[0] = false;
        return new TokenizedExample(ids, mask);
    }

    private int RequireEos() =>
        _tok.EosId ?? throw new FineAlignException("the tokenizer has no EOS token; SFT needs one to end completions");

}

/// <summary>A tokenized SFT file.</summary>
public sealed record SftDataset(IReadOnlyList<TokenizedExample> Examples, SftFormat Format, int Truncated, int Skipped)
{
    /// <summary>
    /// Reads, validates and tokenizes <paramref name="path"/>. One summary warning reports truncated
    /// examples and those skipped because truncation left no target token.
    /// </summary>
    public static SftDataset Load(string path, TextTokenizer tokenizer, SftOptions options, Action<string>? warn = null)
        => FromExamples(SftReader.Read(path), path, tokenizer, options, warn);

    /// <summary>As <see cref="Load"/>, for examples already parsed (e.g. the built-in corpus); <paramref name="path"/> names them in messages.</summary>
    public static SftDataset FromExamples(IEnumerable<SftExample> examples, string path, TextTokenizer tokenizer, SftOptions options, Action<string>? warn = null)
    {
        var encoder = new SftEncoder(tokenizer, options);
        var list = new List<TokenizedExample>();
        int truncated = 0, skipped = 0;
        SftFormat format = SftFormat.Text;
        foreach (var ex in examples)
        {
            format = ex.Format;
            var t = encoder.Encode(ex, path, out bool cut);
            if (cut) truncated++;
            if (t is null) skipped++;
            else list.Add(t);
        }
        if (list.Count == 0 && skipped == 0) throw new FineAlignException($"{path}: no examples (the file is empty)");
        if (truncated > 0)
            warn?.Invoke($"{path}: {truncated} of {list.Count + skipped} examples were longer than {options.MaxLength} tokens and were truncated" +
                         (skipped > 0 ? $"; {skipped} kept no completion token and were skipped" : ""));
        if (list.Count == 0) throw new FineAlignException($"{path}: every example was skipped (no completion token within {options.MaxLength} tokens)");
        return new SftDataset(list, format, truncated, skipped);
    }
}
