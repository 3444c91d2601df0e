using System.Text.Json;

namespace FineAlign.Text.Pipeline;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c>, run as the Rust <c>tokenizers</c> library runs it: added tokens are split
/// off, each remaining section is normalised, pre-tokenised into words, each word is encoded by the model (BPE,
/// WordPiece, WordLevel), and the post-processor adds special tokens; decoding maps ids to token strings
/// (special added tokens dropped on request) and runs the decoder chain.
/// <para>
/// Decision: the pipeline is implemented here rather than through Microsoft.ML.Tokenizers. Its BpeTokenizer
/// cannot express <c>ignore_merges</c>, per-section normalisers (SentencePiece's Prepend after each added
/// token), Split behaviours/invert, Metaspace's prepend schemes, non-special added tokens, or the decoder
/// chain exactly, and exactness against the reference ids is the point. Microsoft.ML.Tokenizers still reads
/// tokenizer.model (SentencePiece) and vocab.json + merges.txt, and is the speed yardstick in the benchmark.
/// </para>
/// Every component the file names is either implemented or refused at load with an error naming it and
/// its place in the file; <c>truncation</c> and <c>padding</c> are ignored, as transformers disables them
/// unless a call asks for them.
/// </summary>
public sealed class TokenizerJson
{
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly TokenModel _model;
    private readonly PostProcessor? _post;
    private readonly Decoder? _decoder;
    private readonly AddedVocabulary _added;
    private readonly Dictionary<string, int> _addedByContent;

    private TokenizerJson(string path, Normalizer? n, PreTokenizer? p, TokenModel m, PostProcessor? post, Decoder? d, List<AddedToken> added)
    {
        Path = path;
        _normalizer = n; _preTokenizer = p; _model = m; _post = post; _decoder = d;
        _added = new AddedVocabulary(added, n);
        _addedByContent = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in added) _addedByContent.TryAdd(t.Content, t.Id);
        int max = Math.Max(m.Pieces.Length - 1, added.Count == 0 ? -1 : added.Max(t => t.Id));
        VocabSize = max + 1;
        BosPrefix = post?.Prefix ?? [];
    }

    /// <summary>The file this was read from.</summary>
    public string Path { get; }
    /// <summary>One more than the largest id (model vocabulary and added tokens).</summary>
    public int VocabSize { get; }
    /// <summary>The tokens of tokenizer.json's <c>added_tokens</c>.</summary>
    public IReadOnlyList<AddedToken> AddedTokens => _added.Tokens;
    /// <summary>The ids the post-processor puts before a single sequence (usually BOS; empty when none).</summary>
    public int[] BosPrefix { get; }

    /// <summary>The id of a token string (added token or vocabulary entry), or null.</summary>
    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out int id) ? id : _model.Vocab.TryGetValue(token, out id) ? id : null;

    /// <summary>The token string of an id (added token or vocabulary entry), or null for an id outside both.</summary>
    public string? IdToToken(int id) => _added.ById.TryGetValue(id, out var t) ? t.Content : _model.IdToToken(id);

    public bool IsSpecial(int id) => _added.ById.TryGetValue(id, out var t) && t.Special;

    /// <summary>
    /// Encodes <paramref name="text"/>; <paramref name="addSpecialTokens"/> applies the post-processor (e.g. BOS).
    /// <paramref name="continuation"/> encodes text that follows earlier text: no SentencePiece dummy prefix
    /// (Prepend normaliser, Metaspace "first") at its start.
    /// </summary>
    public int[] Encode(string text, bool addSpecialTokens = false, bool continuation = false)
    {
        var pieces = new List<Piece>();
        foreach (var (s, e, id) in _added.SplitRaw(text))
        {
            if (id >= 0) { pieces.Add(new Piece("", id, s == 0)); continue; }
            string section = s == 0 && e == text.Length ? text : text[s..e];
            bool atStart = s == 0 && !continuation;
            string norm = _normalizer is null ? section : _normalizer.Normalize(section, midText: s == 0 && continuation);
            foreach (var (s2, e2, id2) in _added.SplitNormalized(norm))
                pieces.Add(id2 >= 0 ? new Piece("", id2, false)
                    : new Piece(s2 == 0 && e2 == norm.Length ? norm : norm[s2..e2], -1, atStart && s2 == 0));
        }
        if (_preTokenizer is not null) pieces = _preTokenizer.Apply(pieces);
        var ids = new List<int>(text.Length / 3 + 4);
        foreach (var p in pieces)
        {
            if (p.IsToken) ids.Add(p.Id);
            else _model.Tokenize(p.Text, ids);
        }
        int[] result = ids.ToArray();
        return addSpecialTokens && _post is not null ? _post.Process(result) : result;
    }

    /// <summary>Text of <paramref name="ids"/>; ids outside the vocabulary are skipped, as tokenizers does.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            if (skipSpecialTokens && IsSpecial(id)) continue;
            if (IdToToken(id) is string t) tokens.Add(t);
        }
        return _decoder is null ? string.Join(' ', tokens) : string.Concat(_decoder.DecodeChain(tokens));
    }

    /// <summary>Reads and checks <paramref name="path"/>; any unknown or unsupported part is a one-line error naming it.</summary>
    public static TokenizerJson Load(string path)
    {
        byte[] bytes = TokenizerFiles.ReadAllBytes(path);
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new FineAlignException($"{path}: is not valid UTF-8 text");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { AllowDuplicateProperties = false, MaxDepth = 256 }); }
        catch (JsonException e) { throw new FineAlignException($"{path}: invalid JSON: {e.Message.ReplaceLineEndings(" ")}", e); }
        using (doc)
        try
        {
            var root = new JsonFields(path, "", doc.RootElement);
            JsonFields? Part(string name) => root.Get(name) is { } v ? new JsonFields(path, name, v) : null;
            var normalizer = Part("normalizer") is { } nf ? Normalizer.Parse(nf) : null;
            var pre = Part("pre_tokenizer") is { } pf ? PreTokenizer.Parse(pf) : null;
            var model = TokenModel.Parse(Part("model") ?? throw new FineAlignException($"{path}: no 'model' object"));
            var added = AddedVocabulary.Parse(path, root.Get("added_tokens"));
            var addedIds = added.GroupBy(t => t.Content).ToDictionary(g => g.Key, g => g.First().Id, StringComparer.Ordinal);
            int? TokenId(string t) => addedIds.TryGetValue(t, out int i) ? i : model.Vocab.TryGetValue(t, out i) ? i : null;
            var post = Part("post_processor") is { } qf ? PostProcessor.Parse(qf, TokenId) : null;
            var decoder = Part("decoder") is { } df ? Decoder.Parse(df) : null;
            return new TokenizerJson(path, normalizer, pre, model, post, decoder, added);
        }
        catch (InvalidOperationException)  // JsonElement.GetString on a lone surrogate escape
        {
            throw new FineAlignException($"{path}: a JSON string is not valid Unicode (a lone UTF-16 surrogate escape such as \\ud800?)");
        }
    }
}
