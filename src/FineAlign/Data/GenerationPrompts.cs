using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Text;

namespace FineAlign.Data;

/// <summary>One prompt to generate from: the file line it came from, the JSON to echo back, its token ids, whether it is a chat.</summary>
public sealed record GenerationPrompt(long? Line, JsonNode? Echo, int[] Ids, bool IsChat);

/// <summary>
/// Reads prompts for generation and tokenises them exactly as training does (<see cref="SftEncoder.EncodePrompt(string)"/>;
/// chat prompts with the chat template and its generation prompt), so a fine-tuned model sees the prefix it was trained
/// on. A file's lines are <c>{"prompt": "..."}</c>, conversational <c>{"prompt"|"messages": [{"role", "content"}, ...]}</c> or
/// <c>{"prompt_input_ids": [...]}</c>. Every prompt is checked against the model's vocabulary and context.
/// </summary>
/// <param name="tokenizer">Null when the model folder has none: only <c>prompt_input_ids</c> can be read then.</param>
/// <param name="folder">The model folder (named in errors).</param>
public sealed class GenerationPromptReader(TextTokenizer? tokenizer, string folder, string? chatTemplate, int vocabSize, int context, int maxNewTokens)
{
    /// <summary>Extra chat-template variables (enable_thinking, tools ...).</summary>
    public IReadOnlyDictionary<string, object?>? ChatTemplateKwargs { get; init; }

    private SftEncoder? _encoder;
    private int? _chatEnd;
    private bool _chatEndResolved;

    private SftEncoder Encoder(Func<string, Exception> fail) =>
        _encoder ??= new SftEncoder(tokenizer ?? throw fail(
            $"needs a tokenizer, but the model folder '{folder}' has no tokenizer files (give prompt_input_ids instead)"),
            new SftOptions { ChatTemplate = chatTemplate, TemplateFolder = folder, ChatTemplateKwargs = ChatTemplateKwargs });

    /// <summary>Text prompts given directly; <paramref name="where"/> names prompt i in errors (e.g. "--prompt #1").</summary>
    public IEnumerable<GenerationPrompt> FromTexts(IReadOnlyList<string> prompts, Func<int, string>? where = null)
    {
        for (int i = 0; i < prompts.Count; i++)
        {
            string at = where?.Invoke(i) ?? $"prompt {i + 1}";
            if (prompts[i].Length == 0) throw new FineAlignException($"{at} is empty");
            int[] ids = Encoder(p => new FineAlignException($"{at}: text prompts {p}")).EncodePrompt(prompts[i]);
            Check(ids, m => new FineAlignException($"{at}: {m}"));
            yield return new GenerationPrompt(null, prompts[i], ids, false);
        }
    }

    public IEnumerable<GenerationPrompt> FromFile(string file)
    {
        foreach (var line in JsonlReader.Read(file))
        {
            var o = line.Object;
            string[] fields = ["prompt", "messages", "prompt_input_ids"];
            var present = fields.Where(o.ContainsKey).ToList();
            if (present.Count == 0)
                throw new DataFormatException(file, line.LineNumber, null, "expected 'prompt' (a string), 'messages' (a list of messages) or 'prompt_input_ids' (token ids)");
            if (present.Count > 1)
                throw new DataFormatException(file, line.LineNumber, null, $"has {string.Join(" and ", present.Select(f => $"'{f}'"))}; give one");
            string field = present[0];
            Exception Fail(string m) => new DataFormatException(file, line.LineNumber, field, m);

            GenerationPrompt p;
            if (field == "prompt_input_ids")
            {
                int[] ids = line.RequireIntArray(file, field);
                p = new GenerationPrompt(line.LineNumber, tokenizer is null ? null : tokenizer.Decode(ids, skipSpecialTokens: false), ids, false);
            }
            else if (field == "messages" || o[field] is JsonArray)   // TRL's conversational prompt is a message list too
            {
                var messages = ParseMessages(o[field], Fail);
                var encoder = Encoder(m => Fail("chat prompts " + m));
                _ = encoder.Chat;   // a missing or broken template is a setup error, not this line's
                int[] ids;
                try { ids = encoder.EncodePrompt(messages); }
                catch (FineAlignException e) when (ChatTemplateRefusal.Is(e)) { throw Fail(e.Message); }
                p = new GenerationPrompt(line.LineNumber, o[field]!.DeepClone(), ids, true);
            }
            else
            {
                string text = line.RequireString(file, field);
                if (text.Length == 0) throw Fail("is empty");
                p = new GenerationPrompt(line.LineNumber, text, Encoder(m => Fail("text prompts " + m)).EncodePrompt(text), false);
            }
            Check(p.Ids, Fail);
            yield return p;
        }
    }

    private void Check(int[] ids, Func<string, Exception> fail)
    {
        if (ids.Length == 0) throw fail("no tokens; generation needs at least one prompt token");
        int vocab = vocabSize;
        for (int t = 0; t < ids.Length; t++)
            if (ids[t] < 0 || ids[t] >= vocab)
                throw fail($"token id {ids[t]} at position {t} is outside the model's vocabulary [0, {vocab})");
        if (ids.Length + maxNewTokens > context)
            throw fail($"prompt of {ids.Length} tokens + --max-new-tokens {maxNewTokens} exceeds the model's context of {context} tokens");
    }

    private static List<ChatMessage> ParseMessages(JsonNode? node, Func<string, Exception> fail)
    {
        if (node is not JsonArray arr) throw fail($"expected a list of messages, got {JsonlReader.Kind(node)}");
        if (arr.Count == 0) throw fail("is an empty list");
        var list = new List<ChatMessage>(arr.Count);
        for (int i = 0; i < arr.Count; i++)
        {
            if (arr[i] is not JsonObject m || m["role"] is not JsonValue r || r.GetValueKind() != JsonValueKind.String
                || m["content"] is not JsonValue c || c.GetValueKind() != JsonValueKind.String)
                throw fail($"message {i}: expected an object with string 'role' and 'content'");
            list.Add(new ChatMessage(r.GetValue<string>(), c.GetValue<string>()) { Fields = (JsonObject)m.DeepClone() });
        }
        return list;
    }

    /// <summary>
    /// The chat template's end-of-turn token (&lt;|im_end|&gt;, &lt;|eot_id|&gt;, &lt;end_of_turn&gt; ...) when it is one token, else null:
    /// chat prompts also end there, as a chat model's generation_config usually lists it beside EOS.
    /// </summary>
    public int? ChatEnd()
    {
        if (_chatEndResolved) return _chatEnd;
        _chatEndResolved = true;
        _chatEnd = _encoder?.Chat.EndOfTurn.Id;
        return _chatEnd;
    }
}
