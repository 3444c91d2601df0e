using System.Text.Json;
using System.Text.Json.Nodes;

namespace FineAlign.Models.Gguf;

/// <summary>llama.cpp's token types (llama_token_type / gguf-py TokenType).</summary>
public enum GgufTokenType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

/// <summary>
/// The <c>tokenizer.ggml.*</c> part of a GGUF file, read straight from a Hugging Face tokenizer folder's JSON
/// (tokenizer.json, tokenizer_config.json; vocab.json + merges.txt without tokenizer.json).
/// Two kinds, as llama.cpp knows them:
/// <list type="bullet">
/// <item><c>gpt2</c>: byte-level BPE (GPT-2, Llama 3, Qwen2, FineAlign's byte tokenizer): tokens, types, merges and
/// the pre-tokeniser name (<c>tokenizer.ggml.pre</c>) llama.cpp uses to split text before BPE.</item>
/// <item><c>llama</c>: SentencePiece-style BPE (Llama 2, Mistral: '▁' for spaces, &lt;0xXX&gt; byte fallback): tokens, types
/// and scores; llama.cpp merges the adjacent pair whose joined token has the highest score, so a token's score is
/// minus the rank of the merge that makes it, which reproduces the BPE merge order.</item>
/// </list>
/// A pre-tokeniser llama.cpp would not recognise is refused by name: llama.cpp would otherwise fall back to its
/// default splitting and tokenise text differently from the model's own tokenizer, silently.
/// </summary>
public sealed class GgufVocabulary
{
    public required string Model { get; init; }
    /// <summary>llama.cpp's pre-tokeniser name (<c>default</c> for SentencePiece).</summary>
    public required string Pre { get; init; }
    public required List<string> Tokens { get; init; }
    public required List<int> TokenTypes { get; init; }
    public List<float>? Scores { get; init; }
    public List<string>? Merges { get; init; }
    public int? BosId { get; init; }
    public int? EosId { get; init; }
    public int? UnkId { get; init; }
    public int? PadId { get; init; }
    public bool AddBos { get; init; }
    public bool AddEos { get; init; }
    /// <summary>SentencePiece only: whether '▁' is prepended to the text (add_dummy_prefix).</summary>
    public bool? AddSpacePrefix { get; init; }
    public string? ChatTemplate { get; init; }

    // Pre-tokeniser regexes as they appear in tokenizer.json, with the name llama.cpp's llama-vocab.cpp
    // maps to the same splitting (its convert_hf_to_gguf.py identifies them by hashing a test string's tokens).
    private const string Llama3Regex =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    private const string Qwen2Regex =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

    /// <summary>The pre-tokeniser names this exporter can write (each verified against llama.cpp's tokenisation).</summary>
    public static readonly string[] KnownPre = ["gpt-2", "llama-bpe", "qwen2"];

    /// <summary>Pads the vocabulary to the model's <paramref name="vocabSize"/> with unused "[PAD{id}]" tokens (as llama.cpp's converter does).</summary>
    public void PadTo(int vocabSize, string source)
    {
        if (Tokens.Count > vocabSize)
            throw new FineAlignException($"{source}: the tokenizer has {Tokens.Count} tokens but the model's vocab_size is {vocabSize}; they must match for GGUF.");
        for (int id = Tokens.Count; id < vocabSize; id++)
        {
            Tokens.Add($"[PAD{id}]");
            TokenTypes.Add((int)GgufTokenType.Unused);
            Scores?.Add(-1000f);
        }
    }

    public void WriteTo(GgufWriter w)
    {
        w.AddString("tokenizer.ggml.model", Model);
        w.AddString("tokenizer.ggml.pre", Pre);
        w.AddStrings("tokenizer.ggml.tokens", Tokens);
        if (Scores is not null) w.AddFloat32s("tokenizer.ggml.scores", Scores);
        w.AddInt32s("tokenizer.ggml.token_type", TokenTypes);
        if (Merges is not null) w.AddStrings("tokenizer.ggml.merges", Merges);
        if (BosId is int b) w.AddUInt32("tokenizer.ggml.bos_token_id", (uint)b);
        if (EosId is int e) w.AddUInt32("tokenizer.ggml.eos_token_id", (uint)e);
        if (UnkId is int u) w.AddUInt32("tokenizer.ggml.unknown_token_id", (uint)u);
        if (PadId is int p) w.AddUInt32("tokenizer.ggml.padding_token_id", (uint)p);
        w.AddBool("tokenizer.ggml.add_bos_token", AddBos);
        w.AddBool("tokenizer.ggml.add_eos_token", AddEos);
        if (AddSpacePrefix is bool sp) w.AddBool("tokenizer.ggml.add_space_prefix", sp);
        if (ChatTemplate is not null) w.AddString("tokenizer.chat_template", ChatTemplate);
    }

    /// <summary>
    /// Reads the tokenizer of <paramref name="folder"/>. <paramref name="config"/> supplies bos/eos/pad ids when
    /// tokenizer_config.json does not name them.
    /// </summary>
    public static GgufVocabulary FromFolder(string folder, ModelConfig? config = null)
    {
        string tokJson = Path.Combine(folder, "tokenizer.json");
        string tokConfigPath = Path.Combine(folder, "tokenizer_config.json");
        var tokConfig = ReadObject(tokConfigPath);
        if (File.Exists(tokJson)) return FromTokenizerJson(folder, ReadObject(tokJson)!, tokConfig, config);
        if (File.Exists(Path.Combine(folder, "vocab.json")) && File.Exists(Path.Combine(folder, "merges.txt")))
            return FromVocabMerges(folder, tokConfig, config);
        if (File.Exists(Path.Combine(folder, "tokenizer.model")))
            throw new FineAlignException($"{folder}: only tokenizer.model (SentencePiece protobuf) was found; GGUF export reads tokenizer.json " +
                                         "(save the tokenizer with transformers' save_pretrained to get one).");
        throw new FineAlignException($"{folder}: no tokenizer files (tokenizer.json, or vocab.json + merges.txt) to export into the GGUF vocabulary.");
    }

    private static GgufVocabulary FromTokenizerJson(string folder, JsonObject tj, JsonObject? tokConfig, ModelConfig? config)
    {
        string src = Path.Combine(folder, "tokenizer.json");
        var model = tj["model"] as JsonObject ?? throw new FineAlignException($"{src}: field 'model' is missing.");
        string type = Str(model["type"]) ?? "BPE";
        if (type != "BPE")
            throw new FineAlignException($"{src}: tokenizer model '{type}' cannot be exported to GGUF (byte-level or SentencePiece-style BPE only).");
        var vocab = model["vocab"] as JsonObject ?? throw new FineAlignException($"{src}: model.vocab is missing.");

        // id → token, from the model vocabulary and the added tokens.
        var byId = new SortedDictionary<int, string>();
        foreach (var (tok, v) in vocab)
            byId[Int(v) ?? throw new FineAlignException($"{src}: model.vocab['{tok}'] is not an integer id.")] = tok;
        var special = new HashSet<int>();
        var addedNormal = new HashSet<int>();
        if (tj["added_tokens"] is JsonArray added)
            foreach (var a in added.OfType<JsonObject>())
            {
                int id = Int(a["id"]) ?? throw new FineAlignException($"{src}: an added token has no integer id.");
                byId[id] = Str(a["content"]) ?? throw new FineAlignException($"{src}: added token {id} has no content.");
                (a["special"] is JsonValue s && s.TryGetValue(out bool sp) && sp ? special : addedNormal).Add(id);
            }

        bool sentencePiece = model["byte_fallback"] is JsonValue bf && bf.TryGetValue(out bool b) && b
                             || Mentions(tj["pre_tokenizer"], "Metaspace") || Mentions(tj["normalizer"], "Prepend");
        var (tokens, types) = Dense(byId, src);
        string? unk = Str(model["unk_token"]);
        var merges = ReadMerges(model["merges"], src);

        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++) ids.TryAdd(tokens[i], i);
        int? Id(string? token) => token is not null && ids.TryGetValue(token, out int i) ? i : null;

        for (int i = 0; i < tokens.Count; i++)
        {
            if (types[i] == (int)GgufTokenType.Unused) continue;
            if (special.Contains(i)) types[i] = (int)GgufTokenType.Control;
            else if (addedNormal.Contains(i)) types[i] = (int)GgufTokenType.UserDefined;
            else if (sentencePiece && IsByteToken(tokens[i])) types[i] = (int)GgufTokenType.Byte;
        }
        if (sentencePiece && Id(unk) is int unkId) types[unkId] = (int)GgufTokenType.Unknown;

        var (bos, eos, pad, unkTok) = SpecialTokens(tokConfig);
        int? bosId = Id(bos) ?? config?.BosTokenId;
        int? eosId = Id(eos) ?? (config?.EosTokenIds.Length > 0 ? config.EosTokenIds[0] : null);
        int? padId = Id(pad) ?? config?.PadTokenId;
        bool addBos = Bool(tokConfig?["add_bos_token"]) ?? PostProcessorAdds(tj["post_processor"], bos);
        bool addEos = Bool(tokConfig?["add_eos_token"]) ?? false;
        string? template = ReadChatTemplate(folder, tokConfig);

        if (sentencePiece)
        {
            // score(token) = −rank of the merge that produces it, so llama.cpp's highest-score-first merging
            // follows the BPE merge order; tokens no merge produces (characters, bytes, specials) score 0.
            var scores = Enumerable.Repeat(0f, tokens.Count).ToList();
            var scored = new HashSet<int>();
            for (int r = 0; r < merges.Count; r++)
            {
                int sp = merges[r].IndexOf(' ', 1);
                if (sp < 0) continue;
                string joined = string.Concat(merges[r].AsSpan(0, sp), merges[r].AsSpan(sp + 1));
                if (ids.TryGetValue(joined, out int id) && scored.Add(id)) scores[id] = -r - 1;
            }
            bool prefix = Mentions(tj["normalizer"], "Prepend") || MetaspacePrefix(tj["pre_tokenizer"]);
            return new GgufVocabulary
            {
                Model = "llama", Pre = "default", Tokens = tokens, TokenTypes = types, Scores = scores,
                BosId = bosId, EosId = eosId, PadId = padId, UnkId = Id(unkTok ?? unk),
                AddBos = addBos, AddEos = addEos, AddSpacePrefix = prefix, ChatTemplate = template,
            };
        }

        string pre = ByteLevelPre(tj["normalizer"], tj["pre_tokenizer"], src);
        return new GgufVocabulary
        {
            Model = "gpt2", Pre = pre, Tokens = tokens, TokenTypes = types, Merges = merges,
            BosId = bosId, EosId = eosId, PadId = padId, UnkId = Id(unkTok),
            AddBos = addBos, AddEos = addEos, ChatTemplate = template,
        };
    }

    // GPT-2's own files: vocab.json + merges.txt split with GPT-2's regex (the "gpt-2" pre-tokeniser).
    private static GgufVocabulary FromVocabMerges(string folder, JsonObject? tokConfig, ModelConfig? config)
    {
        string src = Path.Combine(folder, "vocab.json");
        var vocab = ReadObject(src)!;
        var byId = new SortedDictionary<int, string>();
        foreach (var (tok, v) in vocab)
            byId[Int(v) ?? throw new FineAlignException($"{src}: '{tok}' has no integer id.")] = tok;
        var (tokens, types) = Dense(byId, src);
        var merges = File.ReadLines(Path.Combine(folder, "merges.txt"))
            .Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++) ids.TryAdd(tokens[i], i);
        var (bos, eos, pad, _) = SpecialTokens(tokConfig);
        int? Id(string? t) => t is not null && ids.TryGetValue(t, out int i) ? i : null;
        foreach (var t in new[] { bos, eos, pad })
            if (Id(t) is int sid) types[sid] = (int)GgufTokenType.Control;
        return new GgufVocabulary
        {
            Model = "gpt2", Pre = "gpt-2", Tokens = tokens, TokenTypes = types, Merges = merges,
            BosId = Id(bos) ?? config?.BosTokenId, EosId = Id(eos) ?? (config?.EosTokenIds.Length > 0 ? config.EosTokenIds[0] : null),
            PadId = Id(pad) ?? config?.PadTokenId, AddBos = Bool(tokConfig?["add_bos_token"]) ?? false,
            ChatTemplate = ReadChatTemplate(folder, tokConfig),
        };
    }

    /// <summary>
    /// llama.cpp's name for a byte-level BPE pre-tokeniser: GPT-2's (ByteLevel with its built-in regex), or a
    /// Split regex followed by ByteLevel without regex (Llama 3, Qwen2). Anything else is refused by name.
    /// </summary>
    private static string ByteLevelPre(JsonNode? normalizer, JsonNode? pre, string src)
    {
        string? norm = normalizer is JsonObject n ? Str(n["type"]) : null;
        string Describe() => (pre?.ToJsonString() ?? "null") is var s && s.Length > 300 ? s[..300] + "…" : s;
        string Refuse(string why) => throw new FineAlignException(
            $"{src}: pre-tokeniser {why} is not one llama.cpp recognises (known here: {string.Join(", ", KnownPre)}); " +
            $"refusing to write a GGUF whose vocabulary llama.cpp would split differently. pre_tokenizer = {Describe()}");
        if (pre is JsonObject o && Str(o["type"]) == "ByteLevel")
        {
            bool useRegex = Bool(o["use_regex"]) ?? true;
            if (!useRegex) Refuse("ByteLevel without a regex");
            if (Bool(o["add_prefix_space"]) == true) Refuse("ByteLevel with add_prefix_space");
            if (norm is not null) Refuse($"GPT-2 ByteLevel with a '{norm}' normaliser");
            return "gpt-2";
        }
        if (pre is JsonObject seq && Str(seq["type"]) == "Sequence" && seq["pretokenizers"] is JsonArray parts && parts.Count == 2
            && parts[0] is JsonObject split && Str(split["type"]) == "Split"
            && parts[1] is JsonObject bl && Str(bl["type"]) == "ByteLevel" && Bool(bl["use_regex"]) == false)
        {
            string? regex = split["pattern"] is JsonObject p ? Str(p["Regex"]) : null;
            string? behavior = Str(split["behavior"]);
            if (behavior is not (null or "Isolated") || Bool(split["invert"]) == true) Refuse($"Split with behavior '{behavior}'");
            if (regex == Llama3Regex && norm is null) return "llama-bpe";
            if (regex == Qwen2Regex && norm is null or "NFC") return "qwen2";
            Refuse(regex is null ? "Split without a regex" : $"Split regex \"{regex}\"" + (norm is null ? "" : $" with a '{norm}' normaliser"));
        }
        return Refuse(pre is JsonObject t ? $"'{Str(t["type"])}'" : "(none)");
    }

    // ids must be 0..n-1; holes (ids no token claims) become unused "[PAD{id}]" tokens.
    private static (List<string>, List<int>) Dense(SortedDictionary<int, string> byId, string src)
    {
        if (byId.Count == 0) throw new FineAlignException($"{src}: the vocabulary is empty.");
        if (byId.Keys.First() < 0) throw new FineAlignException($"{src}: token id {byId.Keys.First()} is negative.");
        int n = byId.Keys.Last() + 1;
        var tokens = new List<string>(n);
        var types = new List<int>(n);
        for (int i = 0; i < n; i++)
        {
            bool has = byId.TryGetValue(i, out var t);
            tokens.Add(has ? t! : $"[PAD{i}]");
            types.Add((int)(has ? GgufTokenType.Normal : GgufTokenType.Unused));
        }
        return (tokens, types);
    }

    // tokenizer.json writes merges as "a b" strings (older) or ["a", "b"] pairs (newer); GGUF wants "a b".
    private static List<string> ReadMerges(JsonNode? node, string src)
    {
        var list = new List<string>();
        if (node is not JsonArray arr) return list;
        foreach (var m in arr)
        {
            if (m is JsonValue v && v.TryGetValue(out string? s)) list.Add(s);
            else if (m is JsonArray pair && pair.Count == 2 && Str(pair[0]) is string a && Str(pair[1]) is string b) list.Add(a + " " + b);
            else throw new FineAlignException($"{src}: merge {list.Count} is neither \"a b\" nor [\"a\", \"b\"].");
        }
        return list;
    }

    private static bool IsByteToken(string t) => t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
                                                 && Uri.IsHexDigit(t[3]) && Uri.IsHexDigit(t[4]);

    private static (string? Bos, string? Eos, string? Pad, string? Unk) SpecialTokens(JsonObject? c)
        => (TokenString(c?["bos_token"]), TokenString(c?["eos_token"]), TokenString(c?["pad_token"]), TokenString(c?["unk_token"]));

    // Without add_bos_token in tokenizer_config.json, BOS is added when the post-processor's single-sequence template starts with it.
    private static bool PostProcessorAdds(JsonNode? post, string? bos)
    {
        if (bos is null || post is not JsonObject p) return false;
        if (Str(p["type"]) == "Sequence" && p["processors"] is JsonArray ps) return ps.Any(x => PostProcessorAdds(x, bos));
        return Str(p["type"]) == "TemplateProcessing" && p["single"] is JsonArray single
               && single.FirstOrDefault() is JsonObject first && first["SpecialToken"] is JsonObject st && Str(st["id"]) == bos;
    }

    private static string? ReadChatTemplate(string folder, JsonObject? tokConfig)
    {
        string jinja = Path.Combine(folder, "chat_template.jinja");
        if (File.Exists(jinja)) return File.ReadAllText(jinja);
        var node = tokConfig?["chat_template"];
        if (node is JsonValue v && v.TryGetValue(out string? s)) return s;
        if (node is JsonArray arr)
        {
            var named = arr.OfType<JsonObject>().Select(o => (Name: Str(o["name"]), Template: Str(o["template"]))).ToList();
            return named.FirstOrDefault(t => t.Name == "default").Template ?? named.FirstOrDefault().Template;
        }
        return null;
    }

    private static bool Mentions(JsonNode? node, string type) => node switch
    {
        JsonObject o => Str(o["type"]) == type || o.Any(kv => kv.Value is JsonArray or JsonObject && Mentions(kv.Value, type)),
        JsonArray a => a.Any(x => Mentions(x, type)),
        _ => false,
    };

    private static bool MetaspacePrefix(JsonNode? pre)
    {
        if (pre is JsonArray a) return a.Any(MetaspacePrefix);
        if (pre is not JsonObject o) return false;
        if (Str(o["type"]) == "Metaspace")
            return Str(o["prepend_scheme"]) is string scheme ? scheme != "never" : Bool(o["add_prefix_space"]) ?? true;
        return o["pretokenizers"] is JsonArray parts && parts.Any(MetaspacePrefix);
    }

    private static JsonObject? ReadObject(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            return JsonNode.Parse(File.ReadAllText(path), documentOptions: StrictJson.Options) as JsonObject
                   ?? throw new FineAlignException($"{path}: expected a JSON object.");
        }
        catch (JsonException e)
        {
            throw new FineAlignException($"{path}: invalid JSON ({e.Message.ReplaceLineEndings(" ")}).");
        }
    }

    private static string? TokenString(JsonNode? n) => n switch
    {
        JsonValue v when v.TryGetValue(out string? s) && s.Length > 0 => s,
        JsonObject o => Str(o["content"]) is { Length: > 0 } c ? c : null,
        _ => null,
    };

    private static string? Str(JsonNode? n) => n is JsonValue v && v.TryGetValue(out string? s) ? s : null;
    private static bool? Bool(JsonNode? n) => n is JsonValue v && v.TryGetValue(out bool b) ? b : null;
    private static int? Int(JsonNode? n) => n is JsonValue v ? v.TryGetValue(out int i) ? i : v.TryGetValue(out long l) && l is >= 0 and <= int.MaxValue ? (int)l : null : null;
}
