using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Text.Jinja;

namespace FineAlign.Text;

/// <summary>
/// One chat message. <see cref="Fields"/> is the message as the data gave it (tool_calls, reasoning_content, name ...)
/// and is what the template sees when present; otherwise it sees {role, content}.
/// </summary>
public sealed record ChatMessage(string Role, string Content)
{
    public JsonObject? Fields { get; init; }

    /// <summary>The message as a template value.</summary>
    internal object? ToTemplateValue() =>
        Fields is not null ? JinjaValues.FromJson(Fields) : new JinjaDict { ["role"] = Role, ["content"] = Content };
}

/// <summary>
/// A piece of rendered chat text. <see cref="IsAssistantContent"/> marks text the model generates (an assistant reply
/// with its end marker), the tokens TRL's assistant-only loss trains on. <see cref="MessageIndex"/> is the message a
/// target piece belongs to (-1 otherwise).
/// </summary>
public sealed record ChatSegment(string Text, bool IsAssistantContent, int MessageIndex);

/// <summary>The built-in chat formats, for models whose tokenizer has no chat_template (e.g. the byte tokenizer).</summary>
public enum ChatFormat { ChatML, Llama2, Zephyr }

/// <summary>
/// Marks (as the inner exception of a <see cref="FineAlignException"/>) that the template refused the messages — it called
/// raise_exception, or is not prefix-stable for them — so the caller reports it as a data error of that line.
/// </summary>
public sealed class ChatTemplateRefusal(string message) : Exception(message)
{
    public static FineAlignException Create(string message) => new(message, new ChatTemplateRefusal(message));
    public static bool Is(Exception e) => e.InnerException is ChatTemplateRefusal;
}

/// <summary>A rendered conversation and the character spans that are training targets.</summary>
public sealed record ChatRendering(string Text, IReadOnlyList<TextSpan> Targets);

/// <summary>
/// A chat template ready to render: the Jinja source, where it came from (for error messages), the token strings
/// transformers passes (bos_token, eos_token, pad_token) and extra keyword variables (enable_thinking, tools ...).
/// </summary>
public sealed class ChatTemplate
{
    private readonly JinjaTemplate _jinja;
    private readonly TextTokenizer? _tokenizer;
    private readonly Dictionary<string, object?> _baseVariables = new(StringComparer.Ordinal);
    private (string? Text, int? Id)? _endOfTurn;

    public ChatTemplate(string jinja, string source, TextTokenizer? tokenizer, string? bosToken = null, string? eosToken = null,
                        IReadOnlyDictionary<string, object?>? kwargs = null, ChatFormat? preset = null)
    {
        Source = source;
        Preset = preset;
        _tokenizer = tokenizer;
        try { _jinja = JinjaTemplate.Parse(jinja); }
        catch (JinjaException e) { throw new FineAlignException($"{source}: chat template syntax error at {Where(e)}: {e.Problem}"); }
        // As transformers: the tokenizer's special tokens that are set, tools/documents (None unless given), then kwargs.
        void Token(string name, string? value) { if (!string.IsNullOrEmpty(value)) _baseVariables[name] = value; }
        Token("bos_token", bosToken ?? tokenizer?.BosToken);
        Token("eos_token", eosToken ?? tokenizer?.EosToken);
        Token("pad_token", tokenizer?.PadToken);
        _baseVariables["tools"] = null;
        _baseVariables["documents"] = null;
        if (kwargs is not null) foreach (var (k, v) in kwargs) _baseVariables[k] = v;
    }

    /// <summary>Where the template came from: a file, "tokenizer_config.json of X", or "preset chatml".</summary>
    public string Source { get; }
    public ChatFormat? Preset { get; }
    public string Jinja => _jinja.Source;
    public bool HasGenerationBlocks => _jinja.HasGenerationBlocks;

    private static string Where(JinjaException e) => e.Column > 0 ? $"line {e.Line}, column {e.Column}" : $"line {e.Line}";

    /// <summary>Renders <paramref name="messages"/>; template errors name <see cref="Source"/>.</summary>
    public RenderResult Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, IReadOnlyDictionary<string, object?>? extra = null)
    {
        var vars = new Dictionary<string, object?>(_baseVariables, StringComparer.Ordinal)
        {
            ["messages"] = messages.Select(m => m.ToTemplateValue()).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        if (extra is not null) foreach (var (k, v) in extra) vars[k] = v;
        try { return _jinja.Render(vars); }
        catch (JinjaRaisedException e)
        {
            // A preset's refusals are FineAlign's own rules, worded as such; another template is named.
            throw ChatTemplateRefusal.Create(Preset is null ? $"the chat template ({Source}) refused the messages: {e.TemplateMessage}" : e.TemplateMessage);
        }
        catch (JinjaException e) { throw new FineAlignException($"{Source}: chat template error at line {e.Line}: {e.Problem} (pass --chat-template to use another template)"); }
    }

    public string RenderText(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt) => Render(messages, addGenerationPrompt).Text;

    /// <summary>
    /// The whole conversation and its trained spans: the template's <c>{% generation %}</c> output when it has such
    /// blocks; otherwise each assistant reply located by rendering the messages before it (that rendering must be a
    /// prefix of the whole, or the template is refused as not prefix-stable) and ending at the template's end-of-turn
    /// token. Only messages from <paramref name="promptCount"/> on are targets (TRL's conversational prompt/completion).
    /// </summary>
    public ChatRendering RenderForTraining(IReadOnlyList<ChatMessage> messages, int promptCount = 0)
    {
        var whole = Render(messages, addGenerationPrompt: false);
        string w = whole.Text;
        if (HasGenerationBlocks)
        {
            int cut = promptCount == 0 ? 0 : PrefixLength(messages, promptCount, w);
            var spans = whole.GenerationSpans.Where(s => s.Start >= cut).ToList();
            if (spans.Count == 0 && messages.Skip(promptCount).Any(m => m.Role == "assistant"))
                throw ChatTemplateRefusal.Create($"the chat template ({Source}) has {{% generation %}} blocks but none covers an assistant reply here");
            return new ChatRendering(w, spans);
        }
        var targets = new List<TextSpan>();
        string? eot = EndOfTurn.Text;
        for (int i = Math.Max(0, promptCount); i < messages.Count; i++)
        {
            if (messages[i].Role != "assistant") continue;
            int before = PrefixLength(messages, i, w);
            int start = before;
            // The generation prompt (e.g. "<|im_start|>assistant\n") belongs to the prompt side.
            if (TryRender(messages, i, true) is string g) start = Math.Max(before, CommonPrefix(g, w));
            // The reply ends before the next rendering of a message prefix that the whole starts with (the very next one
            // may differ: Qwen3 re-renders the last reply with a think block, Llama 3 appends a header).
            int limit = w.Length;
            for (int k = i + 1; k < messages.Count; k++)
                if (Render(messages.Take(k).ToList(), false).Text is var pk && w.StartsWith(pk, StringComparison.Ordinal) && pk.Length > start)
                { limit = pk.Length; break; }
            int end = -1;
            if (eot is not null && w.IndexOf(eot, start, StringComparison.Ordinal) is int at && at >= 0 && at < limit)
                end = at + eot.Length;
            if (end < 0)
            {
                // No end-of-turn marker: the reply is what rendering it added, up to where that differs from the whole.
                string next = Render(messages.Take(i + 1).ToList(), false).Text;
                end = Math.Min(limit, CommonPrefix(next, w));
                while (end > start && char.IsWhiteSpace(w[end - 1])) end--;
            }
            if (end <= start)
                throw ChatTemplateRefusal.Create($"the chat template ({Source}) is not prefix-stable: assistant message {i} cannot be located in the rendered conversation; add {{% generation %}} blocks to the template (see docs/CHAT_TEMPLATES.md)");
            targets.Add(new TextSpan(start, end));
        }
        return new ChatRendering(w, targets);
    }

    /// <summary>Length of the rendering of the first <paramref name="count"/> messages, which must be a prefix of <paramref name="whole"/>.</summary>
    private int PrefixLength(IReadOnlyList<ChatMessage> messages, int count, string whole)
    {
        if (count == 0) return 0;
        string p = Render(messages.Take(count).ToList(), false).Text;
        if (!whole.StartsWith(p, StringComparison.Ordinal))
        {
            int at = CommonPrefix(p, whole);
            throw ChatTemplateRefusal.Create(
                $"the chat template ({Source}) is not prefix-stable: the first {count} messages render as text that is not a prefix of the whole conversation " +
                $"(they differ at character {at}: {Snippet(p, at)} vs {Snippet(whole, at)}), so the assistant-only mask cannot be derived; " +
                "add {% generation %} blocks to the template (see docs/CHAT_TEMPLATES.md) or pass --chat-template");
        }
        return p.Length;
    }

    private string? TryRender(IReadOnlyList<ChatMessage> messages, int count, bool generationPrompt)
    {
        try { return Render(messages.Take(count).ToList(), generationPrompt).Text; }
        catch (FineAlignException) { return null; }
    }

    private static string Snippet(string s, int at) =>
        JsonSerializer.Serialize(s.Substring(at, Math.Min(20, s.Length - at)));

    private static int CommonPrefix(string a, string b)
    {
        int n = Math.Min(a.Length, b.Length), i = 0;
        while (i < n && a[i] == b[i]) i++;
        return i;
    }

    /// <summary>
    /// The token that ends an assistant turn (ChatML's &lt;|im_end|&gt;, Llama 3's &lt;|eot_id|&gt;, Gemma's &lt;end_of_turn&gt;, else
    /// eos): the first special token the template writes after a probe reply. Id null when the tokenizer does not make it one token.
    /// </summary>
    public (string? Text, int? Id) EndOfTurn => _endOfTurn ??= DetectEndOfTurn();

    private (string?, int?) DetectEndOfTurn()
    {
        const string probe = "FineAlignProbeReply";
        string? eos = _baseVariables.TryGetValue("eos_token", out var e) ? e as string : null;
        string? text = null;
        try
        {
            string b = Render([new("user", "Hi"), new("assistant", probe)], false).Text;
            int at = b.IndexOf(probe, StringComparison.Ordinal);
            if (at >= 0)
            {
                string suffix = b[(at + probe.Length)..];
                if (_tokenizer is not null)
                    foreach (int id in _tokenizer.Encode(suffix))
                        if (_tokenizer.Decode([id], skipSpecialTokens: true).Length == 0 && _tokenizer.Decode([id], skipSpecialTokens: false) is { Length: > 0 } s)
                        { text = s; break; }
                if (text is null && eos is not null && suffix.Contains(eos, StringComparison.Ordinal)) text = eos;
            }
        }
        catch (FineAlignException) { }
        text ??= eos;
        int? tokenId = text is not null && _tokenizer?.Encode(text) is [int single] ? single : null;
        return (text, tokenId);
    }

    /// <summary>The conversation tokenized with its loss mask (<paramref name="allTokens"/>: every token but the first is a target).</summary>
    public TokenizedExample EncodeConversation(IReadOnlyList<ChatMessage> messages, int promptCount = 0, bool allTokens = false)
    {
        var tok = _tokenizer ?? throw new InvalidOperationException("this chat template has no tokenizer");
        if (allTokens)
        {
            string text = RenderText(messages, false);   // every token trained: no mask to derive
            return ChatTemplates.Tokenize(tok, text, [new TextSpan(0, text.Length)]);
        }
        var r = RenderForTraining(messages, promptCount);
        return ChatTemplates.Tokenize(tok, r.Text, r.Targets);
    }

    /// <summary>A prompt ready for generation (with the generation prompt), tokenized as the training sequence is.</summary>
    public int[] EncodePrompt(IReadOnlyList<ChatMessage> messages)
    {
        var tok = _tokenizer ?? throw new InvalidOperationException("this chat template has no tokenizer");
        return ChatTemplates.Tokenize(tok, RenderText(messages, true), []).InputIds;
    }

    /// <summary>
    /// The prompt as text for pipelines that tokenize text themselves and add BOS (generation with text prompts):
    /// rendered with the generation prompt, without a leading bos_token when the tokenizer adds BOS anyway.
    /// </summary>
    public string PromptText(IReadOnlyList<ChatMessage> messages)
    {
        string text = RenderText(messages, true);
        if (_tokenizer is { AddBos: true, BosId: not null, BosToken: { Length: > 0 } bos } && text.StartsWith(bos, StringComparison.Ordinal))
            text = text[bos.Length..];
        return text;
    }
}

/// <summary>
/// Finds and renders chat templates: the model's own (chat_template.jinja beside tokenizer_config.json, else its
/// chat_template, string or list of named templates), a named preset, or a template file; and tokenizes rendered
/// text with a loss mask on character spans.
/// </summary>
public static class ChatTemplates
{
    /// <summary>Preset names accepted by <see cref="Parse"/> (and --chat-template).</summary>
    public static readonly string[] Names = ["chatml", "llama2", "zephyr"];

    public static ChatFormat Parse(string name) => TryParse(name) ??
        throw new FineAlignException($"unknown chat template '{name}'; known presets: {string.Join(", ", Names)} (or give a .jinja file)");

    public static ChatFormat? TryParse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "chatml" => ChatFormat.ChatML,
        "llama2" or "llama-2" => ChatFormat.Llama2,
        "zephyr" => ChatFormat.Zephyr,
        _ => null,
    };

    // Shared checks of the presets: the roles they know, system only first (as FineAlign's renderers always required).
    private const string PresetChecks =
        "{%- if message.role not in ['system', 'user', 'assistant'] %}{{ raise_exception(\"message \" ~ loop.index0 ~ \" has role '\" ~ message.role ~ \"'; expected system, user or assistant\") }}{% endif %}\n" +
        "{%- if message.role == 'system' and not loop.first %}{{ raise_exception('message ' ~ loop.index0 ~ ' is a system message; only the first message may be one') }}{% endif %}\n";

    /// <summary>ChatML (Qwen 2, OpenHermes ...) with generation blocks around each reply and its &lt;|im_end|&gt;.</summary>
    public const string ChatMLJinja =
        "{%- for message in messages %}\n" + PresetChecks +
        "{{- '<|im_start|>' + message.role + '\\n' }}\n" +
        "{%- if message.role == 'assistant' %}{% generation %}{{ message.content + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}\n" +
        "{%- else %}{{ message.content + '<|im_end|>\\n' }}{% endif %}\n" +
        "{%- endfor %}\n" +
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    /// <summary>Zephyr: &lt;|role|&gt; headers, turns ended by eos.</summary>
    public const string ZephyrJinja =
        "{%- for message in messages %}\n" + PresetChecks +
        "{{- '<|' + message.role + '|>\\n' }}\n" +
        "{%- if message.role == 'assistant' %}{% generation %}{{ message.content + eos_token }}{% endgeneration %}{{ '\\n' }}\n" +
        "{%- else %}{{ message.content + eos_token + '\\n' }}{% endif %}\n" +
        "{%- endfor %}\n" +
        "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

    /// <summary>Llama 2 chat: the system prompt inside the first [INST]; contents stripped; "&lt;s&gt;[INST] user [/INST] reply &lt;/s&gt;".</summary>
    public const string Llama2Jinja =
        "{%- for message in messages %}\n" + PresetChecks + "{%- endfor %}\n" +
        "{%- if messages and messages[0].role == 'system' %}{% set system = messages[0].content | trim %}{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}\n" +
        "{%- if system is defined and loop_messages | length == 0 %}{{ raise_exception('the Llama-2 chat format cannot render a system message without a user message') }}{% endif %}\n" +
        "{%- for message in loop_messages %}\n" +
        "{%- if (message.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('the Llama-2 chat format needs user/assistant turns alternating, starting with user (message ' ~ (loop.index0 + (1 if system is defined else 0)) ~ \" is '\" ~ message.role ~ \"')\") }}{% endif %}\n" +
        "{%- if message.role == 'user' %}{{ bos_token + '[INST] ' }}{% if loop.first and system is defined %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}{{ message.content | trim + ' [/INST]' }}\n" +
        "{%- else %}{% generation %}{{ ' ' + message.content | trim + ' ' + eos_token }}{% endgeneration %}{% endif %}\n" +
        "{%- endfor %}";

    public static string PresetJinja(ChatFormat f) => f switch
    {
        ChatFormat.ChatML => ChatMLJinja,
        ChatFormat.Llama2 => Llama2Jinja,
        _ => ZephyrJinja,
    };

    /// <summary>A preset as a template; <paramref name="tokenizer"/> gives bos/eos unless given.</summary>
    public static ChatTemplate Preset(ChatFormat f, TextTokenizer? tokenizer = null, string? bos = null, string? eos = null,
                                      IReadOnlyDictionary<string, object?>? kwargs = null) =>
        new(PresetJinja(f), $"preset {Names[(int)f]}", tokenizer, bos ?? tokenizer?.BosToken ?? "<s>", eos ?? tokenizer?.EosToken ?? "</s>", kwargs, f);

    /// <summary>Recognises which preset a Jinja chat_template looks like by its markers (informational only).</summary>
    public static ChatFormat? Detect(string? jinja)
    {
        if (string.IsNullOrEmpty(jinja)) return null;
        if (jinja.Contains("<|im_start|>")) return ChatFormat.ChatML;
        if (jinja.Contains("[INST]") && jinja.Contains("<<SYS>>")) return ChatFormat.Llama2;
        if (jinja.Contains("<|user|>") && jinja.Contains("<|assistant|>")) return ChatFormat.Zephyr;
        return null;
    }

    /// <summary>
    /// The template to use. <paramref name="option"/> (--chat-template) is a preset name, a template file (.jinja, or a
    /// .json holding "chat_template"), or the name of one of the model's named templates; without it, the model's own:
    /// <c>chat_template.jinja</c> in <paramref name="folder"/> (newer transformers), else the chat_template of
    /// tokenizer_config.json (list form: the one named "default"). No template at all is an error asking for --chat-template.
    /// </summary>
    public static ChatTemplate Resolve(string? option, TextTokenizer tokenizer, string? folder = null,
                                       IReadOnlyDictionary<string, object?>? kwargs = null)
    {
        var named = folder is null ? [] : NamedTemplates(folder);
        if (!string.IsNullOrWhiteSpace(option))
        {
            if (TryParse(option) is ChatFormat f) return Preset(f, tokenizer, kwargs: kwargs);
            if (File.Exists(option)) return new ChatTemplate(ReadTemplateFile(option), option, tokenizer, kwargs: kwargs);
            if (named.FirstOrDefault(n => n.Name == option) is { Template: not null } hit)
                return new ChatTemplate(hit.Template, $"{hit.Where} (template '{option}')", tokenizer, kwargs: kwargs);
            if (Directory.Exists(option)) throw new FineAlignException($"--chat-template {option}: is a folder; give a preset ({string.Join(", ", Names)}), a .jinja file or a template name");
            throw new FineAlignException($"unknown chat template '{option}': not a preset ({string.Join(", ", Names)}), not a file" +
                (named.Count > 0 ? $", not one of the model's named templates ({string.Join(", ", named.Select(n => n.Name))})" : ""));
        }
        if (folder is not null)
        {
            string jinjaFile = Path.Combine(folder, "chat_template.jinja");
            if (File.Exists(jinjaFile)) return new ChatTemplate(File.ReadAllText(jinjaFile), jinjaFile, tokenizer, kwargs: kwargs);
            if (named.Count > 1 || (named.Count == 1 && named[0].Name is not null))
            {
                var def = named.FirstOrDefault(n => n.Name == "default");
                if (def.Template is null)
                    throw new FineAlignException($"{named[0].Where}: the model has several chat templates ({string.Join(", ", named.Select(n => n.Name))}) and none is named 'default'; pass --chat-template NAME");
                return new ChatTemplate(def.Template, $"{def.Where} (template 'default')", tokenizer, kwargs: kwargs);
            }
        }
        if (tokenizer.ChatTemplate is { Length: > 0 } own)
            return new ChatTemplate(own, folder is null ? "the tokenizer's chat_template" : Path.Combine(folder, "tokenizer_config.json"), tokenizer,
                kwargs: kwargs, preset: Enum.GetValues<ChatFormat>().Cast<ChatFormat?>().FirstOrDefault(f => PresetJinja(f!.Value) == own));   // e.g. a byte-tokenizer model saved by FineAlign
        throw new FineAlignException((folder is null ? "the tokenizer" : $"{folder}: the tokenizer") +
            $" has no chat_template; pass --chat-template ({string.Join("|", Names)} or a .jinja file)");
    }

    /// <summary>The model's chat templates with names: tokenizer_config.json's list form and additional_chat_templates/*.jinja.</summary>
    public static List<(string? Name, string? Template, string Where)> NamedTemplates(string folder)
    {
        var result = new List<(string?, string?, string)>();
        string config = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(config))
        {
            JsonNode? root;
            try { root = JsonNode.Parse(File.ReadAllText(config), documentOptions: StrictJson.Options); }
            catch (JsonException e) { throw new FineAlignException($"{config}: invalid JSON: {e.Message.ReplaceLineEndings(" ")}"); }
            if (root?["chat_template"] is JsonArray arr)
                foreach (var item in arr.OfType<JsonObject>())
                    result.Add((item["name"]?.GetValueKind() == JsonValueKind.String ? item["name"]!.GetValue<string>() : null,
                                item["template"]?.GetValueKind() == JsonValueKind.String ? item["template"]!.GetValue<string>() : null, config));
        }
        string extra = Path.Combine(folder, "additional_chat_templates");
        if (Directory.Exists(extra))
            foreach (var f in Directory.GetFiles(extra, "*.jinja").Order(StringComparer.Ordinal))
                result.Add((Path.GetFileNameWithoutExtension(f), File.ReadAllText(f), f));
        return result;
    }

    private static string ReadTemplateFile(string path)
    {
        string text = File.ReadAllText(path);
        if (!path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return text;
        try
        {
            if (JsonNode.Parse(text) is JsonObject o && o["chat_template"] is JsonValue v && v.GetValueKind() == JsonValueKind.String) return v.GetValue<string>();
        }
        catch (JsonException e) { throw new FineAlignException($"{path}: invalid JSON: {e.Message.ReplaceLineEndings(" ")}"); }
        throw new FineAlignException($"{path}: expected a JSON object with a string 'chat_template'");
    }

    /// <summary>
    /// Tokenizes rendered chat text as transformers does (the whole string at once, no specials added) and marks the
    /// tokens overlapping <paramref name="targets"/> (its return_assistant_tokens_mask rule). BOS is prepended when the
    /// tokenizer adds BOS and the text does not already start with it. The first token is never a target.
    /// </summary>
    public static TokenizedExample Tokenize(TextTokenizer tokenizer, string text, IReadOnlyList<TextSpan> targets)
    {
        bool bos = tokenizer.AddBos && tokenizer.BosId is int && !(tokenizer.BosToken is { Length: > 0 } b && text.StartsWith(b, StringComparison.Ordinal));
        int[] ids = tokenizer.Encode(text);
        bool[] mask = MaskBySegments(tokenizer, text, targets, ids) ?? MaskByOffsets(tokenizer, text, targets, ids);
        if (bos)
        {
            ids = [tokenizer.BosId!.Value, .. ids];
            mask = [false, .. mask];
        }
        if (mask.Length > 0) mask[0] = false;
        return new TokenizedExample(ids, mask);
    }

    // Fast path: encoding the pieces between span boundaries one by one gives the same ids as the whole string (the
    // usual case: boundaries sit at special tokens or newlines), so the mask follows the pieces exactly.
    private static bool[]? MaskBySegments(TextTokenizer tok, string text, IReadOnlyList<TextSpan> targets, int[] whole)
    {
        var cuts = new SortedSet<int> { 0, text.Length };
        foreach (var s in targets) { cuts.Add(Math.Clamp(s.Start, 0, text.Length)); cuts.Add(Math.Clamp(s.End, 0, text.Length)); }
        var points = cuts.ToList();
        var mask = new List<bool>(whole.Length);
        int n = 0;
        for (int k = 0; k + 1 < points.Count; k++)
        {
            int a = points[k], e = points[k + 1];
            if (a == e) continue;
            int[] part = a == 0 ? tok.Encode(text[a..e]) : tok.EncodeContinuation(text[a..e]);
            if (n + part.Length > whole.Length) return null;
            for (int j = 0; j < part.Length; j++) if (whole[n + j] != part[j]) return null;
            n += part.Length;
            bool target = targets.Any(s => s.Start <= a && e <= s.End);
            for (int j = 0; j < part.Length; j++) mask.Add(target);
        }
        return n == whole.Length ? mask.ToArray() : null;
    }

    // General path: a token's characters are found by decoding prefixes (binary search per span boundary).
    private static bool[] MaskByOffsets(TextTokenizer tok, string text, IReadOnlyList<TextSpan> targets, int[] ids)
    {
        var mask = new bool[ids.Length];
        if (tok.Decode(ids, skipSpecialTokens: false) != text)
            throw new FineAlignException("the tokenizer does not decode the rendered chat text back to itself, so the assistant-token mask cannot be placed; report this tokenizer");
        var cache = new Dictionary<int, int>();
        int Len(int k) => cache.TryGetValue(k, out var v) ? v : cache[k] = tok.Decode(ids.Take(k), skipSpecialTokens: false).Length;
        int TokenAt(int p)   // the token whose characters include position p
        {
            int lo = 0, hi = ids.Length - 1;
            while (lo < hi)
            {
                int mid = (lo + hi) / 2;
                if (Len(mid + 1) > p) hi = mid; else lo = mid + 1;
            }
            return lo;
        }
        foreach (var s in targets)
        {
            if (s.Length <= 0 || ids.Length == 0) continue;
            int a = TokenAt(s.Start), e = TokenAt(s.End - 1);
            for (int k = a; k <= e; k++) mask[k] = true;
        }
        return mask;
    }

    // ---- the preset API kept from before the Jinja engine (segments of a preset rendering) ----

    /// <summary>A preset rendering split into target and non-target segments.</summary>
    public static List<ChatSegment> RenderSegments(ChatFormat format, IReadOnlyList<ChatMessage> messages,
        bool addGenerationPrompt, string bos = "<s>", string eos = "</s>")
    {
        var r = Preset(format, null, bos, eos).Render(messages, addGenerationPrompt);
        var segs = new List<ChatSegment>();
        int pos = 0, assistant = 0;
        var assistantIndex = messages.Select((m, i) => (m, i)).Where(x => x.m.Role == "assistant").Select(x => x.i).ToList();
        foreach (var s in r.GenerationSpans)
        {
            if (s.Start > pos) segs.Add(new(r.Text[pos..s.Start], false, -1));
            segs.Add(new(r.Text[s.Start..s.End], true, assistant < assistantIndex.Count ? assistantIndex[assistant] : -1));
            assistant++;
            pos = s.End;
        }
        if (pos < r.Text.Length) segs.Add(new(r.Text[pos..], false, -1));
        return segs;
    }

    public static string Render(ChatFormat format, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt,
        string bos = "<s>", string eos = "</s>")
        => Preset(format, null, bos, eos).RenderText(messages, addGenerationPrompt);

    public static List<ChatSegment> RenderSegments(ChatFormat format, IReadOnlyList<ChatMessage> messages,
        bool addGenerationPrompt, TextTokenizer tokenizer)
        => RenderSegments(format, messages, addGenerationPrompt, tokenizer.BosToken ?? "<s>", tokenizer.EosToken ?? "</s>");

    /// <summary>Tokenizes segments (the whole text at once; <paramref name="isTarget"/> picks the trained segments, default assistant content).</summary>
    public static TokenizedExample Tokenize(TextTokenizer tokenizer, IReadOnlyList<ChatSegment> segments, Func<ChatSegment, bool>? isTarget = null)
    {
        isTarget ??= s => s.IsAssistantContent;
        var spans = new List<TextSpan>();
        int pos = 0;
        foreach (var s in segments)
        {
            if (isTarget(s) && s.Text.Length > 0) spans.Add(new TextSpan(pos, pos + s.Text.Length));
            pos += s.Text.Length;
        }
        return Tokenize(tokenizer, string.Concat(segments.Select(s => s.Text)), spans);
    }

    public static int[] EncodePrompt(TextTokenizer tokenizer, ChatFormat format, IReadOnlyList<ChatMessage> messages) =>
        Preset(format, tokenizer).EncodePrompt(messages);
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
