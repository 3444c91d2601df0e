using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace FineAlign.Text;

/// <summary>Which Hugging Face tokenizer files an <see cref="HfTokenizer"/> was built from.</summary>
public enum HfTokenizerKind
{
    /// <summary>tokenizer.model (SentencePiece BPE/Unigram, Llama family).</summary>
    SentencePiece,
    /// <summary>vocab.json + merges.txt (GPT-2 style byte-level BPE).</summary>
    VocabMerges,
    /// <summary>tokenizer.json (any model/normaliser/pre-tokeniser/decoder it supports), run by <see cref="Pipeline.TokenizerJson"/>.</summary>
    TokenizerJson,
}

/// <summary>
/// A Hugging Face tokenizer folder. tokenizer.json runs through FineAlign's own implementation of the Rust
/// <c>tokenizers</c> pipeline (<see cref="Pipeline.TokenizerJson"/>: exact ids, non-special added tokens such as
/// Qwen3's &lt;think&gt; kept when skipping specials); tokenizer.model (SentencePiece) and vocab.json + merges.txt
/// go through Microsoft.ML.Tokenizers 2.0.1, where every added/special token is matched as one unit and
/// dropped when skipping special tokens. <c>bos/eos/pad_token</c>, <c>add_bos_token</c> and
/// <c>chat_template</c> come from tokenizer_config.json and special_tokens_map.json.
/// </summary>
public sealed class HfTokenizer : TextTokenizer
{
    /// <summary>Files a tokenizer folder may contain; <see cref="Save"/> copies the ones that existed.</summary>
    public static readonly string[] KnownFiles =
    [
        "tokenizer.model", "vocab.json", "merges.txt", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    ];

    private readonly Tokenizer? _inner;
    private readonly Pipeline.TokenizerJson? _json;
    private readonly bool? _addBosSetting;
    private readonly SentencePieceTokenizer? _sp;
    private readonly Dictionary<int, string>? _pieceById;
    private readonly IReadOnlyDictionary<int, string> _specialById;
    private readonly int _vocabSize;
    private readonly bool _nfc;
    private readonly bool _addPrefixSpace;

    private HfTokenizer(string sourceFolder, Pipeline.TokenizerJson json, IReadOnlyDictionary<string, int> specials, bool? addBosSetting)
        : this(HfTokenizerKind.TokenizerJson, sourceFolder, null, specials, json.VocabSize)
    {
        _json = json;
        _addBosSetting = addBosSetting;
    }

    private HfTokenizer(HfTokenizerKind kind, string sourceFolder, Tokenizer? inner,
        IReadOnlyDictionary<string, int> specials, int vocabSize, bool nfc = false, bool addPrefixSpace = false)
    {
        Kind = kind;
        SourceFolder = Path.GetFullPath(sourceFolder);
        _inner = inner;
        _sp = inner as SentencePieceTokenizer;
        if (_sp is not null)
            _pieceById = _sp.Vocabulary.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
        else if (inner is BpeTokenizer bpe)  // for IdToToken ("Ġworld"); decoding does not use it
            _pieceById = bpe.Vocabulary.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
        SpecialTokens = specials;
        _specialById = specials.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
        _vocabSize = vocabSize;
        _nfc = nfc;
        _addPrefixSpace = addPrefixSpace;
    }

    public HfTokenizerKind Kind { get; }
    /// <summary>The folder the files were read from.</summary>
    public string SourceFolder { get; }
    /// <summary>Special and added tokens (string → id).</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }
    public string? UnkToken { get; private init; }
    public int? UnkId { get; private init; }

    public override int VocabSize => _vocabSize;

    /// <summary>The tokenizer.json pipeline, when this tokenizer was read from tokenizer.json.</summary>
    public Pipeline.TokenizerJson? TokenizerJson => _json;

    public override int[] Encode(string text)
    {
        if (_json is not null) return _json.Encode(text);
        if (_nfc) text = text.Normalize(NormalizationForm.FormC);
        if (_sp is not null)
            return _sp.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false,
                considerPreTokenization: true, considerNormalization: true).ToArray();
        if (_addPrefixSpace && text.Length > 0 && !char.IsWhiteSpace(text[0])) text = " " + text;
        return _inner!.EncodeToIds(text).ToArray();
    }

    /// <summary>
    /// With a tokenizer.json: the post-processor's output (as the Rust library's <c>encode(text, true)</c>),
    /// except that an explicit <c>add_bos_token</c> in tokenizer_config.json wins, as transformers rebuilds the
    /// post-processor from it (false drops the template's BOS, true adds BOS when the template has none).
    /// </summary>
    public override int[] Encode(string text, bool addSpecialTokens)
    {
        if (_json is null || !addSpecialTokens) return base.Encode(text, addSpecialTokens);
        int[] ids = _json.Encode(text, addSpecialTokens: true);
        int[] prefix = _json.BosPrefix;
        if (_addBosSetting == false && prefix.Length > 0 && ids.AsSpan().StartsWith(prefix)) return ids[prefix.Length..];
        if (_addBosSetting == true && prefix.Length == 0 && BosId is int bos) return [bos, .. ids];
        return ids;
    }

    public override string? IdToToken(int id) =>
        _json is not null ? _json.IdToToken(id)
        : _specialById.TryGetValue(id, out string? s) ? s
        : _pieceById is not null ? _pieceById.GetValueOrDefault(id)
        : _inner?.Decode([id]);

    public override bool IsSpecialToken(int id) => _json?.IsSpecial(id) ?? _specialById.ContainsKey(id);

    /// <summary>
    /// Encodes text that continues earlier text (a later chat segment). SentencePiece normally prefixes
    /// every encoded string with '▁' (add_dummy_prefix); mid-sequence that would invent a space, so here
    /// whitespace is escaped by hand and the normalizer (which adds the prefix) is skipped.
    /// </summary>
    public int[] EncodeContinuation(string text)
    {
        if (_json is not null) return _json.Encode(text, continuation: true);
        if (_sp is null || !_sp.AddDummyPrefix) return _sp is null ? EncodeNoPrefixSpace(text) : Encode(text);
        if (_nfc) text = text.Normalize(NormalizationForm.FormC);
        if (_sp.EscapeWhiteSpaces) text = text.Replace(' ', '\u2581');
        return _sp.EncodeToIds(text, false, false, considerPreTokenization: true, considerNormalization: false).ToArray();
    }

    private int[] EncodeNoPrefixSpace(string text)
    {
        if (_nfc) text = text.Normalize(NormalizationForm.FormC);
        return _inner!.EncodeToIds(text).ToArray();
    }

    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        if (_json is not null) return _json.Decode(ids, skipSpecialTokens);
        var sb = new StringBuilder();
        var run = new List<int>();
        bool textEmitted = false;  // SentencePiece: the dummy prefix follows leading special tokens too
        void Flush()
        {
            if (run.Count == 0) return;
            sb.Append(_sp is null ? _inner!.Decode(run) : DecodeSentencePiece(run, atStart: !textEmitted));
            textEmitted = true;
            run.Clear();
        }
        foreach (int id in ids)
        {
            if (_specialById.TryGetValue(id, out string? special))
            {
                Flush();
                if (!skipSpecialTokens) sb.Append(special);
            }
            else run.Add(id);
        }
        Flush();
        return sb.ToString();
    }

    // SentencePiece decoding done here: ML.Tokenizers 2.0.1 drops the first '▁' after leading byte-fallback
    // pieces (e.g. "[INST] 2" decodes as "[INST]2"). Pieces are spelled out, '▁' becomes a space, <0xNN>
    // pieces become bytes, and invalid UTF-8 becomes U+FFFD. Like sentencepiece, the dummy-prefix space of
    // the first piece is removed at the start of the text (after any leading special tokens, where Encode puts it).
    private string DecodeSentencePiece(List<int> ids, bool atStart)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (!_pieceById!.TryGetValue(id, out string? piece)) continue;
            if (piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
                && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
                bytes.Add(b);
            else bytes.AddRange(Encoding.UTF8.GetBytes(piece.Replace('\u2581', ' ')));
        }
        string text = Encoding.UTF8.GetString(bytes.ToArray());
        return atStart && _sp!.AddDummyPrefix && text.StartsWith(' ') ? text[1..] : text;
    }

    /// <summary>Copies the files this tokenizer was loaded from into <paramref name="folder"/>.</summary>
    public override void Save(string folder)
    {
        Directory.CreateDirectory(folder);
        foreach (string name in KnownFiles)
        {
            string src = Path.Combine(SourceFolder, name), dst = Path.Combine(folder, name);
            if (File.Exists(src) && Path.GetFullPath(dst) != src) File.Copy(src, dst, overwrite: true);
        }
    }

    // ---------------------------------------------------------------- SentencePiece

    /// <summary>Loads <c>tokenizer.model</c> (SentencePiece) plus the config files of <paramref name="folder"/>.</summary>
    public static HfTokenizer LoadSentencePiece(string folder)
    {
        string path = Path.Combine(folder, "tokenizer.model");
        byte[] model = File.Exists(path) ? File.ReadAllBytes(path) : throw new FineAlignException($"{path}: file not found");
        var settings = TokenizerSettings.Read(folder);

        SentencePieceTokenizer plain = CreateSp(model, null, path);
        var vocab = plain.Vocabulary;
        string bos = settings.BosToken ?? plain.BeginningOfSentenceToken;
        string eos = settings.EosToken ?? plain.EndOfSentenceToken;
        string unk = settings.UnkToken ?? plain.UnknownToken;

        var specials = new Dictionary<string, int>(StringComparer.Ordinal)
        {
            [plain.BeginningOfSentenceToken] = plain.BeginningOfSentenceId,
            [plain.EndOfSentenceToken] = plain.EndOfSentenceId,
            [plain.UnknownToken] = plain.UnknownId,
        };
        AddSpecials(specials, settings, vocab, path, bos, eos, unk);

        var sp = CreateSp(model, specials, path);
        int vocabSize = Math.Max(vocab.Values.DefaultIfEmpty(-1).Max(), specials.Values.DefaultIfEmpty(-1).Max()) + 1;
        return Finish(new HfTokenizer(HfTokenizerKind.SentencePiece, folder, sp, specials, vocabSize),
            settings, specials, bos, eos, unk, addBosDefault: true);
    }

    private static SentencePieceTokenizer CreateSp(byte[] model, IReadOnlyDictionary<string, int>? specials, string path)
    {
        try
        {
            using var stream = new MemoryStream(model, writable: false);
            return SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false, specials);
        }
        catch (Exception e) when (e is not FineAlignException)
        {
            throw new FineAlignException($"{path}: cannot read SentencePiece model: {e.Message}", e);
        }
    }

    // ---------------------------------------------------------------- vocab.json + merges.txt

    /// <summary>Loads GPT-2 style byte-level BPE from <c>vocab.json</c> + <c>merges.txt</c>.</summary>
    public static HfTokenizer LoadVocabMerges(string folder)
    {
        string vocabPath = Path.Combine(folder, "vocab.json"), mergesPath = Path.Combine(folder, "merges.txt");
        foreach (string p in new[] { vocabPath, mergesPath })
            if (!File.Exists(p)) throw new FineAlignException($"{p}: file not found");
        var vocabJson = TokenizerSettings.ReadObject(vocabPath)!;
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (k, v) in vocabJson)
            vocab[k] = v is JsonValue jv && jv.TryGetValue(out int id)
                ? id : throw new FineAlignException($"{vocabPath}: token '{k}' has no integer id");
        var merges = File.ReadLines(mergesPath)
            .Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal))
            .ToList();
        foreach (string m in merges)
            if (m.Split(' ').Length != 2) throw new FineAlignException($"{mergesPath}: merge line '{m}' is not two tokens separated by one space");
        return CreateByteLevelBpe(HfTokenizerKind.VocabMerges, folder, vocabPath, vocab, merges, ByteLevel.Gpt2Pattern, false, false);
    }

    // ---------------------------------------------------------------- tokenizer.json

    /// <summary>
    /// Loads <c>tokenizer.json</c> (see <see cref="Pipeline.TokenizerJson"/>) plus the config files of <paramref name="folder"/>.
    /// BOS is the token the post-processor puts first (else tokenizer_config.json's bos_token); AddBos says whether
    /// sequences start with it (tokenizer_config.json's add_bos_token when given, else the post-processor).
    /// </summary>
    public static HfTokenizer LoadTokenizerJson(string folder)
    {
        string path = Path.Combine(folder, "tokenizer.json");
        var json = Pipeline.TokenizerJson.Load(path);
        var settings = TokenizerSettings.Read(folder);
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in json.AddedTokens) specials[t.Content] = t.Id;
        int? Id(string? tok) => tok is null ? null : json.TokenToId(tok);
        int? bosId = json.BosPrefix.Length == 1 ? json.BosPrefix[0] : Id(settings.BosToken);
        string? bos = bosId is int b ? json.IdToToken(b) : null;
        bool addBos = (settings.AddBosToken ?? json.BosPrefix.Length > 0) && bosId is not null;
        return new HfTokenizer(folder, json, specials, settings.AddBosToken)
        {
            BosToken = bos,
            BosId = bosId,
            EosToken = Id(settings.EosToken) is null ? null : settings.EosToken,
            EosId = Id(settings.EosToken),
            PadToken = Id(settings.PadToken) is null ? null : settings.PadToken,
            PadId = Id(settings.PadToken),
            UnkToken = Id(settings.UnkToken) is null ? null : settings.UnkToken,
            UnkId = Id(settings.UnkToken),
            AddBos = addBos,
            ChatTemplate = settings.ChatTemplate,
        };
    }

    private static HfTokenizer CreateByteLevelBpe(HfTokenizerKind kind, string folder, string path,
        Dictionary<string, int> vocab, List<string> merges, string pattern, bool nfc, bool addPrefixSpace,
        IReadOnlyDictionary<string, int>? extraAdded = null)
    {
        var settings = TokenizerSettings.Read(folder);
        if (extraAdded is not null)
        {
            var all = new Dictionary<string, int>(extraAdded, StringComparer.Ordinal);
            foreach (var (k, v) in settings.AddedTokens) all[k] = v;
            settings = settings with { AddedTokens = all };
        }
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        AddSpecials(specials, settings, vocab, path, settings.BosToken, settings.EosToken, settings.UnkToken);

        Regex regex;
        try { regex = new Regex(pattern, RegexOptions.Compiled); }
        catch (ArgumentException e) { throw new FineAlignException($"{path}: pre-tokenizer regex is not valid in .NET: {e.Message}", e); }

        Tokenizer inner;
        try
        {
            var options = new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                SpecialTokens = specials.Count > 0 ? specials : null,
                PreTokenizer = new RegexPreTokenizer(regex, specials.Count > 0 ? specials : null),
            };
            inner = BpeTokenizer.Create(options);
        }
        catch (Exception e) when (e is not FineAlignException)
        {
            throw new FineAlignException($"{path}: cannot build the BPE tokenizer: {e.Message}", e);
        }
        int vocabSize = Math.Max(vocab.Values.DefaultIfEmpty(-1).Max(), specials.Values.DefaultIfEmpty(-1).Max()) + 1;
        return Finish(new HfTokenizer(kind, folder, inner, specials, vocabSize, nfc, addPrefixSpace),
            settings, specials, settings.BosToken, settings.EosToken, settings.UnkToken, addBosDefault: false);
    }

    // ---------------------------------------------------------------- shared helpers

    // Puts every configured special/added token with a resolvable id into `specials`.
    private static void AddSpecials(Dictionary<string, int> specials, TokenizerSettings s,
        IReadOnlyDictionary<string, int> vocab, string path, params string?[] named)
    {
        foreach (var (k, v) in s.AddedTokens) specials[k] = v;
        foreach (string? tok in named.Append(s.PadToken).Concat(s.AdditionalSpecialTokens))
        {
            if (tok is null || specials.ContainsKey(tok)) continue;
            if (vocab.TryGetValue(tok, out int id)) specials[tok] = id;
        }
    }

    private static HfTokenizer Finish(HfTokenizer t, TokenizerSettings s, Dictionary<string, int> specials,
        string? bos, string? eos, string? unk, bool addBosDefault)
    {
        int? Id(string? tok) => tok is not null && specials.TryGetValue(tok, out int id) ? id : null;
        int? bosId = Id(bos);
        return new HfTokenizer(t.Kind, t.SourceFolder, t._inner, specials, t._vocabSize, t._nfc, t._addPrefixSpace)
        {
            BosToken = bosId is null ? null : bos,
            BosId = bosId,
            EosToken = Id(eos) is null ? null : eos,
            EosId = Id(eos),
            PadToken = Id(s.PadToken) is null ? null : s.PadToken,
            PadId = Id(s.PadToken),
            UnkToken = Id(unk) is null ? null : unk,
            UnkId = Id(unk),
            AddBos = (s.AddBosToken ?? addBosDefault) && bosId is not null,
            ChatTemplate = s.ChatTemplate,
        };
    }
}
