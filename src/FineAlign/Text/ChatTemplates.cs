
namespace FineAlign.Text;

/// <summary>One chat message; role is "system", "user" or "assistant".</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A piece of rendered chat text. <see cref="IsAssistantContent"/> marks an assistant reply together with
/// its end marker (&lt;|im_end|&gt; / eos), the tokens TRL's assistant-only loss trains on.
/// <see cref="MessageIndex"/> is the message the piece belongs to (-1 for the generation prompt).
/// </summary>
public sealed record ChatSegment(string Text, bool IsAssistantContent, int MessageIndex);

/// <summary>The chat formats FineAlign renders itself (it has no Jinja engine).</summary>
public enum ChatFormat { ChatML, Llama2, Zephyr }

/// <summary>
/// Renders messages as text in a known chat format, as segments so the assistant-only loss mask lines
/// up with tokens exactly (each segment is tokenized on its own).
/// </summary>
public static class ChatTemplates
{
    /// <summary>Names accepted by <see cref="Parse"/> (and --chat-template).</summary>
    public static readonly string[] Names = ["chatml", "llama2", "zephyr"];

    public static ChatFormat Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "chatml" => ChatFormat.ChatML,
        "llama2" or "llama-2" => ChatFormat.Llama2,
        "zephyr" => ChatFormat.Zephyr,
        _ => throw new FineAlignException($"unknown chat template '{name}'; known: {string.Join(", ", Names)}"),
    };

    /// <summary>Recognises a Jinja chat_template by its markers; null when it is none of the known formats.</summary>
    public static ChatFormat? Detect(string? jinja)
    {
        if (string.IsNullOrEmpty(jinja)) return null;
        if (jinja.Contains("<|im_start|>")) return ChatFormat.ChatML;
        // Mistral's template also has [INST] but other spacing and no <<SYS>>: only Llama-2's is recognised.
        if (jinja.Contains("[INST]") && jinja.Contains("<<SYS>>")) return ChatFormat.Llama2;
        if (jinja.Contains("<|user|>") && jinja.Contains("<|assistant|>")) return ChatFormat.Zephyr;
        return null;
    }

    /// <summary>The user's named template wins; else the tokenizer's chat_template when recognisable; else an error.</summary>
    public static ChatFormat Resolve(string? name, string? tokenizerTemplate)
    {
        if (!string.IsNullOrWhiteSpace(name)) return Parse(name);
        if (Detect(tokenizerTemplate) is ChatFormat f) return f;
        throw new FineAlignException(tokenizerTemplate is null
            ? $"the tokenizer has no chat_template; pass --chat-template ({string.Join("|", Names)})"
            : $"the tokenizer's chat_template is not one FineAlign recognises (ChatML, Llama-2, Zephyr); pass --chat-template ({string.Join("|", Names)})");
    }

    /// <summary>
    /// Renders <paramref name="messages"/> as segments. <paramref name="bos"/>/<paramref name="eos"/> are the
    /// tokenizer's token strings (Llama-2 and Zephyr write them into the text, as their Jinja templates do).
    /// </summary>
    public static List<ChatSegment> RenderSegments(ChatFormat format, IReadOnlyList<ChatMessage> messages,
        bool addGenerationPrompt, string bos = "<s>", string eos = "</s>")
    {
        ValidateRoles(messages);
        var segs = new List<ChatSegment>();
        switch (format)
        {
            case ChatFormat.ChatML:
                for (int i = 0; i < messages.Count; i++)
                {
                    var m = messages[i];
                    if (m.Role == "assistant")
                    {
                        segs.Add(new("<|im_start|>assistant\n", false, i));
                        segs.Add(new(m.Content + "<|im_end|>", true, i));
                        segs.Add(new("\n", false, i));
                    }
                    else segs.Add(new($"<|im_start|>{m.Role}\n{m.Content}<|im_end|>\n", false, i));
                }
                if (addGenerationPrompt) segs.Add(new("<|im_start|>assistant\n", false, -1));
                break;

            case ChatFormat.Zephyr:
                for (int i = 0; i < messages.Count; i++)
                {
                    var m = messages[i];
                    if (m.Role == "assistant")
                    {
                        segs.Add(new("<|assistant|>\n", false, i));
                        segs.Add(new(m.Content + eos, true, i));
                        segs.Add(new("\n", false, i));
                    }
                    else segs.Add(new($"<|{m.Role}|>\n{m.Content}{eos}\n", false, i));
                }
                if (addGenerationPrompt) segs.Add(new("<|assistant|>\n", false, -1));
                break;

            case ChatFormat.Llama2:
                // As Meta's / HF's template: the system prompt goes inside the first [INST]; contents are stripped;
                // a turn is "<s>[INST] user [/INST] answer </s>". No generation prompt is needed ([/INST] ends it).
                int start = 0;
                string? system = null;
                if (messages.Count > 0 && messages[0].Role == "system") { system = messages[0].Content.Trim(); start = 1; }
                for (int i = start; i < messages.Count; i++)
                {
                    var m = messages[i];
                    bool expectUser = (i - start) % 2 == 0;
                    if ((m.Role == "user") != expectUser)
                        throw new FineAlignException($"the Llama-2 chat format needs user/assistant turns alternating, starting with user (message {i} is '{m.Role}')");
                    if (m.Role == "user")
                    {
                        string sys = i == start && system is not null ? $"<<SYS>>\n{system}\n<</SYS>>\n\n" : "";
                        segs.Add(new($"{bos}[INST] {sys}{m.Content.Trim()} [/INST]", false, i));
                    }
                    else segs.Add(new($" {m.Content.Trim()} {eos}", true, i));
                }
                if (system is not null && messages.Count == 1)
                    throw new FineAlignException("the Llama-2 chat format cannot render a system message without a user message");
                break;
        }
        return segs;
    }

    /// <summary>The rendered text (concatenation of <see cref="RenderSegments"/>).</summary>
    public static string Render(ChatFormat format, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt,
        string bos = "<s>", string eos = "</s>")
        => string.Concat(RenderSegments(format, messages, addGenerationPrompt, bos, eos).Select(s => s.Text));

    /// <summary>Renders with the tokenizer's own bos/eos strings.</summary>
    public static List<ChatSegment> RenderSegments(ChatFormat format, IReadOnlyList<ChatMessage> messages,
        bool addGenerationPrompt, TextTokenizer tokenizer)
        => RenderSegments(format, messages, addGenerationPrompt, tokenizer.BosToken ?? "<s>", tokenizer.EosToken ?? "</s>");

    /// <summary>
    /// Tokenizes segment by segment. BOS is prepended when the tokenizer adds BOS and the text does not
    /// already start with it (Llama-2 writes it itself). <paramref name="isTarget"/> decides which segments
    /// are training targets (default: assistant content); the first token is never a target.
    /// </summary>
    public static TokenizedExample Tokenize(TextTokenizer tokenizer, IReadOnlyList<ChatSegment> segments,
        Func<ChatSegment, bool>? isTarget = null)
    {
        isTarget ??= s => s.IsAssistantContent;
        var ids = new List<int>();
        var mask = new List<bool>();
        bool startsWithBos = segments.Count > 0 && tokenizer.BosToken is string b && segments[0].Text.StartsWith(b, StringComparison.Ordinal);
        if (tokenizer.AddBos && tokenizer.BosId is int bosId && !startsWithBos) { ids.Add(bosId); mask.Add(false); }
        bool first = true;  // the first segment starts the text (SentencePiece adds its dummy prefix there)
        foreach (var seg in segments)
        {
            if (seg.Text.Length == 0) continue;
            int[] part = first ? tokenizer.Encode(seg.Text) : tokenizer.EncodeContinuation(seg.Text);
            first = false;
            bool target = isTarget(seg);
            ids.AddRange(part);
            for (int k = 0; k < part.Length; k++) mask.Add(target);
        }
        if (mask.Count > 0) mask[0] = false;
        return new TokenizedExample(ids.ToArray(), mask.ToArray());
    }

    /// <summary>
    /// Token ids of a prompt ready for generation (with the generation prompt), tokenized exactly as in
    /// training, so the ids are a prefix of the trained sequence of the same conversation.
    /// </summary>
    public static int[] EncodePrompt(TextTokenizer tokenizer, ChatFormat format, IReadOnlyList<ChatMessage> messages) =>
        Tokenize(tokenizer, RenderSegments(format, messages, addGenerationPrompt: true, tokenizer)).InputIds;

    private static void ValidateRoles(IReadOnlyList<ChatMessage> messages)
    {
        for (int i = 0; i < messages.Count; i++)
        {
            string r = messages[i].Role;
            if (r is not ("system" or "user" or "assistant"))
                throw new FineAlignException($"message {i} has role '{r}'; expected system, user or assistant");
            if (r == "system" && i != 0)
                throw new FineAlignException($"message {i} is a system message; only the first message may be one");
        }
    }
}

/// <summary>Encoding helpers shared by chat and SFT code.</summary>
public static class TokenizerExtensions
{
    /// <summary>
    /// Encodes text that continues a sequence (no SentencePiece dummy '▁' prefix); identical to
    /// <see cref="TextTokenizer.Encode"/> for byte-level tokenizers.
    /// </summary>
    public static int[] EncodeContinuation(this TextTokenizer tokenizer, string text) =>
        tokenizer is HfTokenizer hf ? hf.EncodeContinuation(text) : tokenizer.Encode(text);
}
