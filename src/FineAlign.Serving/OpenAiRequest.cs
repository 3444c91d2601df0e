using System.Globalization;
using System.Text.Json;
using FineAlign.Text;

namespace FineAlign.Serving;

/// <summary>A prompt as token ids, with its text when it came as text (echo returns it unchanged).</summary>
internal sealed record PromptInput(int[] Ids, string? Text);

/// <summary>The sampling fields completions and chat share (OpenAI's names, plus vLLM's top_k, ignore_eos and return_tokens_as_token_ids).</summary>
internal sealed record SamplingFields(string Model, int? MaxTokens, int N, double Temperature, double TopP, int TopK, long? Seed,
                                      string[] Stops, bool Stream, bool IncludeUsage, bool TokenIdStrings, bool IgnoreEos);

internal sealed record CompletionRequest(SamplingFields Fields, List<PromptInput> Prompts, int? Logprobs, bool Echo);

internal sealed record ChatRequest(SamplingFields Fields, List<ChatMessage> Messages, bool Logprobs, int TopLogprobs);

/// <summary>
/// Reads OpenAI request bodies with a 400 naming the field for anything of the wrong type or out of range. Unknown
/// fields are ignored (clients send many); fields FineAlign cannot honour (penalties, logit_bias, tools) are refused.
/// </summary>
internal static class OpenAiRequest
{
    public const int MaxN = 128;
    public const int MaxLogprobs = 20;

    public static async Task<JsonElement> ReadBodyAsync(Stream body, CancellationToken ct)
    {
        try
        {
            using var doc = await JsonDocument.ParseAsync(body, new JsonDocumentOptions { MaxDepth = 64 }, ct);
            var root = doc.RootElement.Clone();
            if (root.ValueKind != JsonValueKind.Object)
                throw new ApiException(400, $"the request body must be a JSON object, got {Kind(root)}");
            return root;
        }
        catch (JsonException e)
        {
            throw new ApiException(400, $"We could not parse the JSON body of your request: {e.Message}");
        }
    }

    /// <summary>The request's "model" ("" when left out).</summary>
    public static string ModelName(JsonElement o) => String(o, "model") ?? "";

    public static CompletionRequest ParseCompletion(JsonElement o, ServedModel model)
    {
        var fields = ParseFields(o, defaultMaxTokens: 16);
        if (Get(o, "suffix") is not null) throw Unsupported("suffix");
        var prompts = ParsePrompts(o, model);
        int? logprobs = Int(o, "logprobs", 0, MaxLogprobs);
        bool echo = Bool(o, "echo") ?? false;
        if (Int(o, "best_of", 1, MaxN) is int bestOf && bestOf != fields.N)
            throw new ApiException(400, "best_of other than n is not supported by finealign serve", "best_of");
        return new CompletionRequest(fields, prompts, logprobs, echo);
    }

    public static ChatRequest ParseChat(JsonElement o)
    {
        var fields = ParseFields(o, defaultMaxTokens: null);
        if (Int(o, "max_completion_tokens", 0, int.MaxValue) is int mct) fields = fields with { MaxTokens = mct };
        foreach (var f in new[] { "tools", "functions", "response_format" })
            if (Get(o, f) is JsonElement e && !(e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 0)
                && !(f == "response_format" && e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) && t.ValueEquals("text")))
                throw Unsupported(f);
        bool logprobs = Bool(o, "logprobs") ?? false;
        int top = Int(o, "top_logprobs", 0, MaxLogprobs) ?? 0;
        if (top > 0 && !logprobs) throw new ApiException(400, "top_logprobs needs logprobs: true", "top_logprobs");
        return new ChatRequest(fields, ParseMessages(o), logprobs, top);
    }

    private static SamplingFields ParseFields(JsonElement o, int? defaultMaxTokens)
    {
        string model = String(o, "model") ?? "";
        int? maxTokens = Int(o, "max_tokens", 0, int.MaxValue) ?? defaultMaxTokens;
        int n = Int(o, "n", 1, MaxN) ?? 1;
        double temperature = Number(o, "temperature") ?? 1.0;
        if (!(temperature >= 0) || double.IsInfinity(temperature)) throw new ApiException(400, $"temperature must be a number ≥ 0 (got {Fmt(temperature)})", "temperature");
        double topP = Number(o, "top_p") ?? 1.0;
        if (!(topP > 0 && topP <= 1)) throw new ApiException(400, $"top_p must be in (0, 1] (got {Fmt(topP)})", "top_p");
        int topK = Int(o, "top_k", -1, int.MaxValue) ?? 0;
        if (topK < 0) topK = 0;                                   // vLLM: -1 disables
        long? seed = Long(o, "seed");
        foreach (var p in new[] { "presence_penalty", "frequency_penalty" })
            if (Number(o, p) is double v && v != 0) throw Unsupported(p);
        if (Get(o, "logit_bias") is JsonElement lb && lb.ValueKind == JsonValueKind.Object && lb.EnumerateObject().Any()) throw Unsupported("logit_bias");
        if (Number(o, "repetition_penalty") is double rp && rp != 1) throw Unsupported("repetition_penalty");
        string[] stops = Get(o, "stop") switch
        {
            null => [],
            { ValueKind: JsonValueKind.String } s => [s.GetString()!],
            { ValueKind: JsonValueKind.Array } a => a.EnumerateArray().Select((x, i) => x.ValueKind == JsonValueKind.String ? x.GetString()! :
                throw new ApiException(400, $"stop[{i}] must be a string, got {Kind(x)}", "stop")).ToArray(),
            var x => throw new ApiException(400, $"stop must be a string or a list of strings, got {Kind(x.Value)}", "stop"),
        };
        stops = stops.Where(s => s.Length > 0).Distinct().ToArray();
        bool stream = Bool(o, "stream") ?? false;
        bool includeUsage = Get(o, "stream_options") is { ValueKind: JsonValueKind.Object } so && Bool(so, "include_usage") == true;
        return new SamplingFields(model, maxTokens, n, temperature, topP, topK, seed, stops, stream, includeUsage,
                                  Bool(o, "return_tokens_as_token_ids") ?? false, Bool(o, "ignore_eos") ?? false);
    }

    private static List<PromptInput> ParsePrompts(JsonElement o, ServedModel model)
    {
        var p = Get(o, "prompt") ?? throw new ApiException(400, "prompt is required (a string, a list of strings, a list of token ids or a list of such lists)", "prompt");
        var list = new List<PromptInput>();
        if (p.ValueKind == JsonValueKind.String) list.Add(FromText(p.GetString()!, model, "prompt"));
        else if (p.ValueKind == JsonValueKind.Array)
        {
            var items = p.EnumerateArray().ToList();
            if (items.Count == 0) throw new ApiException(400, "prompt is an empty list", "prompt");
            if (items.All(x => x.ValueKind == JsonValueKind.Number)) list.Add(FromIds(p, model, "prompt"));
            else
                for (int i = 0; i < items.Count; i++)
                    list.Add(items[i].ValueKind switch
                    {
                        JsonValueKind.String => FromText(items[i].GetString()!, model, $"prompt[{i}]"),
                        JsonValueKind.Array => FromIds(items[i], model, $"prompt[{i}]"),
                        _ => throw new ApiException(400, $"prompt[{i}] must be a string or a list of token ids, got {Kind(items[i])}", "prompt"),
                    });
        }
        else throw new ApiException(400, $"prompt must be a string or a list, got {Kind(p)}", "prompt");
        return list;
    }

    private static PromptInput FromText(string text, ServedModel model, string where)
    {
        var tok = model.Tokenizer ?? throw new ApiException(400, $"{where}: this model has no tokenizer files, so prompts must be token ids", "prompt");
        int[] ids = tok.AddBos && tok.BosId is int bos ? [bos, .. tok.Encode(text)] : tok.Encode(text);
        if (ids.Length == 0) throw new ApiException(400, $"{where} is empty; generation needs at least one token", "prompt");
        return new PromptInput(ids, text);
    }

    private static PromptInput FromIds(JsonElement a, ServedModel model, string where)
    {
        var ids = new int[a.GetArrayLength()];
        int t = 0;
        foreach (var x in a.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt32(out int id))
                throw new ApiException(400, $"{where}[{t}] must be an integer token id, got {Kind(x)}", "prompt");
            if (id < 0 || id >= model.VocabSize)
                throw new ApiException(400, $"{where}[{t}]: token id {id} is outside the model's vocabulary [0, {model.VocabSize})", "prompt");
            ids[t++] = id;
        }
        if (ids.Length == 0) throw new ApiException(400, $"{where} is empty; generation needs at least one token", "prompt");
        return new PromptInput(ids, null);
    }

    private static List<ChatMessage> ParseMessages(JsonElement o)
    {
        var m = Get(o, "messages") ?? throw new ApiException(400, "messages is required (a list of {role, content})", "messages");
        if (m.ValueKind != JsonValueKind.Array) throw new ApiException(400, $"messages must be a list, got {Kind(m)}", "messages");
        var list = new List<ChatMessage>();
        int i = 0;
        foreach (var x in m.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Object) throw new ApiException(400, $"messages[{i}] must be an object, got {Kind(x)}", "messages");
            string role = String(x, "role") ?? throw new ApiException(400, $"messages[{i}].role is required", "messages");
            if (role == "developer") role = "system";             // OpenAI's newer name for the system role
            if (role is not ("system" or "user" or "assistant"))
                throw new ApiException(400, $"messages[{i}].role '{role}' is not supported (system, user, assistant)", "messages");
            string content = Get(x, "content") switch
            {
                null => "",
                { ValueKind: JsonValueKind.String } s => s.GetString()!,
                { ValueKind: JsonValueKind.Array } parts => string.Concat(parts.EnumerateArray().Select(p =>
                    p.ValueKind == JsonValueKind.Object && String(p, "type") == "text" ? String(p, "text") ?? ""
                        : throw new ApiException(400, $"messages[{i}].content: only text parts are supported", "messages"))),
                var c => throw new ApiException(400, $"messages[{i}].content must be a string or a list of text parts, got {Kind(c.Value)}", "messages"),
            };
            list.Add(new ChatMessage(role, content));
            i++;
        }
        if (list.Count == 0) throw new ApiException(400, "messages is an empty list", "messages");
        return list;
    }

    private static ApiException Unsupported(string field) => new(400, $"'{field}' is not supported by finealign serve", field);

    internal static JsonElement? Get(JsonElement o, string name) =>
        o.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string? String(JsonElement o, string name) => Get(o, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.String } s => s.GetString(),
        var x => throw new ApiException(400, $"{name} must be a string, got {Kind(x.Value)}", name),
    };

    private static bool? Bool(JsonElement o, string name) => Get(o, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        var x => throw new ApiException(400, $"{name} must be true or false, got {Kind(x.Value)}", name),
    };

    private static double? Number(JsonElement o, string name) => Get(o, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } x => x.GetDouble(),
        var x => throw new ApiException(400, $"{name} must be a number, got {Kind(x.Value)}", name),
    };

    private static int? Int(JsonElement o, string name, int min, int max)
    {
        if (Get(o, name) is not JsonElement x) return null;
        if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out long v))
            throw new ApiException(400, $"{name} must be an integer, got {(x.ValueKind == JsonValueKind.Number ? x.GetRawText() : Kind(x))}", name);
        if (v < min || v > max)
            throw new ApiException(400, max == int.MaxValue ? $"{name} must be ≥ {min} (got {v})" : $"{name} must be in [{min}, {max}] (got {v})", name);
        return (int)v;
    }

    private static long? Long(JsonElement o, string name)
    {
        if (Get(o, name) is not JsonElement x) return null;
        if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out long v))
            throw new ApiException(400, $"{name} must be an integer, got {(x.ValueKind == JsonValueKind.Number ? x.GetRawText() : Kind(x))}", name);
        return v;
    }

    internal static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "a list",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };

    private static string Fmt(double x) => x.ToString(CultureInfo.InvariantCulture);
}
