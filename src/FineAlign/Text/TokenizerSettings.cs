using System.Text.Json;
using System.Text.Json.Nodes;

namespace FineAlign.Text;

/// <summary>
/// What tokenizer_config.json, special_tokens_map.json and added_tokens.json say about special tokens,
/// <c>add_bos_token</c> and <c>chat_template</c>. Token values may be strings or objects <c>{"content": ...}</c>.
/// </summary>
public sealed record TokenizerSettings
{
    public string? BosToken { get; init; }
    public string? EosToken { get; init; }
    public string? PadToken { get; init; }
    public string? UnkToken { get; init; }
    /// <summary><c>add_bos_token</c>, or null when the files do not say.</summary>
    public bool? AddBosToken { get; init; }
    public string? ChatTemplate { get; init; }
    /// <summary>Added tokens with known ids (added_tokens_decoder, added_tokens.json).</summary>
    public IReadOnlyDictionary<string, int> AddedTokens { get; init; } = new Dictionary<string, int>();
    /// <summary>Further special-token strings without ids (additional_special_tokens).</summary>
    public IReadOnlyList<string> AdditionalSpecialTokens { get; init; } = [];

    public static TokenizerSettings Read(string folder)
    {
        JsonObject? config = ReadObject(Path.Combine(folder, "tokenizer_config.json"));
        JsonObject? map = ReadObject(Path.Combine(folder, "special_tokens_map.json"));
        JsonObject? added = ReadObject(Path.Combine(folder, "added_tokens.json"));

        var addedTokens = new Dictionary<string, int>(StringComparer.Ordinal);
        // An empty token string can never be matched in text (and would stall the special-token splitter).
        string Empty(string file, string what) =>
            throw new FineAlignException($"{Path.Combine(folder, file)}: {what} is an empty string; a token needs at least one character.");
        if (added is not null)
            foreach (var (k, v) in added)
                if (v is JsonValue jv && jv.TryGetValue(out int id)) addedTokens[k.Length > 0 ? k : Empty("added_tokens.json", $"added token {id}")] = id;
        if (config?["added_tokens_decoder"] is JsonObject decoder)
            foreach (var (k, v) in decoder)
                if (int.TryParse(k, out int id) && TokenString(v) is string s)
                    addedTokens[s.Length > 0 ? s : Empty("tokenizer_config.json", $"added_tokens_decoder[\"{k}\"].content")] = id;

        var extra = new List<string>();
        foreach (var src in new[] { map, config })
            if (src?["additional_special_tokens"] is JsonArray arr)
                foreach (var item in arr)
                    if (TokenString(item) is { Length: > 0 } s && !extra.Contains(s)) extra.Add(s);

        // Wrong-typed fields are errors, not silently ignored (checks kept here, where the values are read).
        string configPath = Path.Combine(folder, "tokenizer_config.json"), mapPath = Path.Combine(folder, "special_tokens_map.json");
        foreach (string key in new[] { "bos_token", "eos_token", "pad_token", "unk_token" })
        {
            CheckToken(config, configPath, key);
            CheckToken(map, mapPath, key);
        }
        if (config?["add_bos_token"] is { } ab && !(ab is JsonValue abv && abv.GetValueKind() is JsonValueKind.True or JsonValueKind.False))
            throw new FineAlignException($"{configPath}: field 'add_bos_token': expected true or false, got {ab.ToJsonString()}");
        if (config?["chat_template"] is { } ct && !(ct is JsonArray || ct is JsonValue ctv && ctv.GetValueKind() == JsonValueKind.String))
            throw new FineAlignException($"{configPath}: field 'chat_template': expected a string (or a list of {{name, template}}), got {ct.ToJsonString()}");

        // An empty bos/eos/pad/unk string means "none", as transformers treats it.
        string? Token(string key) => (TokenString(config?[key]) ?? TokenString(map?[key])) is { Length: > 0 } t ? t : null;

        bool? addBos = config?["add_bos_token"] is JsonValue b && b.TryGetValue(out bool bv) ? bv : null;
        return new TokenizerSettings
        {
            BosToken = Token("bos_token"),
            EosToken = Token("eos_token"),
            PadToken = Token("pad_token"),
            UnkToken = Token("unk_token"),
            AddBosToken = addBos,
            ChatTemplate = ReadChatTemplate(config?["chat_template"]),
            AddedTokens = addedTokens,
            AdditionalSpecialTokens = extra,
        };
    }

    // null means "none" in transformers; a number, a boolean or an object without string content is a mistake.
    private static void CheckToken(JsonObject? o, string path, string key)
    {
        if (o?[key] is { } node && TokenString(node) is null)
            throw new FineAlignException($"{path}: field '{key}': expected a string or {{\"content\": \"...\"}}, got {node.ToJsonString()}");
    }

    /// <summary>A token given as "text" or {"content": "text", ...}; null otherwise.</summary>
    public static string? TokenString(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue(out string? s) => s,
        JsonObject o when o["content"] is JsonValue c && c.TryGetValue(out string? s) => s,
        _ => null,
    };

    // chat_template is a string, or a list of {name, template} (then the "default" one is used).
    private static string? ReadChatTemplate(JsonNode? node)
    {
        if (node is JsonValue v && v.TryGetValue(out string? s)) return s;
        if (node is JsonArray arr)
        {
            var named = arr.OfType<JsonObject>()
                .Select(o => (name: TokenString(o["name"]), template: TokenString(o["template"])))
                .ToList();
            return named.FirstOrDefault(t => t.name == "default").template ?? named.FirstOrDefault().template;
        }
        return null;
    }

    /// <summary>Largest tokenizer JSON file read whole (vocab.json of a 250k vocabulary is ~10 MB).</summary>
    internal const long MaxConfigBytes = 256L << 20;

    private static void CheckStrings(string path, JsonElement e)
    {
        try
        {
            switch (e.ValueKind)
            {
                case JsonValueKind.String: e.GetString(); break;
                case JsonValueKind.Array: foreach (var x in e.EnumerateArray()) CheckStrings(path, x); break;
                case JsonValueKind.Object:
                    foreach (var p in e.EnumerateObject()) { _ = p.Name; CheckStrings(path, p.Value); }
                    break;
            }
        }
        catch (InvalidOperationException)
        {
            throw new FineAlignException($"{path}: a JSON string is not valid Unicode (a lone UTF-16 surrogate escape such as \\ud800?)");
        }
    }

    internal static JsonObject? ReadObject(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            InputFile.RequireRegular(path);
            if (new FileInfo(LinkedFile.Resolve(path)).Length > MaxConfigBytes)
                throw new FineAlignException($"{path}: larger than the {MaxConfigBytes:N0} bytes a tokenizer JSON file can sensibly be");
            byte[] bytes = TokenizerFiles.ReadAllBytes(path);
            if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new FineAlignException($"{path}: is not valid UTF-8 text");
            // Materialise every string now: a lone surrogate escape ("\ud800") fails here, with the file named,
            // not later inside whoever reads the field.
            using (var doc = JsonDocument.Parse(bytes, StrictJson.Options)) CheckStrings(path, doc.RootElement);
            return JsonNode.Parse(bytes, documentOptions: StrictJson.Options) as JsonObject
                ?? throw new FineAlignException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new FineAlignException($"{path}: invalid JSON: {StrictJson.Describe(e)}", e);
        }
    }
}
