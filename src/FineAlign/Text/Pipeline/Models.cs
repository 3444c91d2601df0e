using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;

namespace FineAlign.Text.Pipeline;

/// <summary>A tokenizer.json <c>model</c>: turns one pre-tokenised word into ids.</summary>
internal abstract class TokenModel
{
    protected TokenModel(Dictionary<string, int> vocab)
    {
        Vocab = vocab;
        int max = vocab.Count == 0 ? -1 : vocab.Values.Max();
        Pieces = new string?[max + 1];
        foreach (var (k, v) in vocab) Pieces[v] ??= k;
    }

    public Dictionary<string, int> Vocab { get; }
    /// <summary>Piece string by id (null for ids the vocabulary does not cover).</summary>
    public string?[] Pieces { get; }

    public abstract void Tokenize(string word, List<int> ids);

    public string? IdToToken(int id) => id >= 0 && id < Pieces.Length ? Pieces[id] : null;

    public static TokenModel Parse(JsonFields f)
    {
        string type = f.Get("type") is null ? InferType(f) : f.Type;
        return type switch
        {
            "BPE" => Bpe.Read(f),
            "WordPiece" => WordPiece.Read(f),
            "WordLevel" => new WordLevel(ReadVocab(f), f.OptString("unk_token"), f),
            "Unigram" => throw f.Fail("model type 'Unigram' (T5, XLM-R, ALBERT style) is not supported; " +
                                      "use the folder's tokenizer.model (SentencePiece) or vocab.json + merges.txt instead"),
            _ => throw f.Fail("type", $"unknown model type '{type}' (supported: BPE, WordPiece, WordLevel)"),
        };
    }

    // Old tokenizer.json files omit the model's type; tokenizers then guesses it from the fields.
    private static string InferType(JsonFields f) =>
        f.Has("merges") ? "BPE" : f.Has("continuing_subword_prefix") || f.Has("max_input_chars_per_word") ? "WordPiece"
        : f.Get("vocab") is { ValueKind: JsonValueKind.Array } ? "Unigram" : "WordLevel";

    protected static Dictionary<string, int> ReadVocab(JsonFields f)
    {
        var v = f.Get("vocab") ?? throw f.Fail("vocab", "missing (expected an object of token → id)");
        if (v.ValueKind != JsonValueKind.Object) throw f.Fail("vocab", $"expected an object of token → id, got {JsonFields.Kind(v)}");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in v.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw f.Fail("vocab", $"token \"{p.Name}\" has id {p.Value.GetRawText()}; expected a non-negative integer");
            vocab[p.Name] = id;
        }
        return vocab;
    }

    protected static int RequireToken(JsonFields f, Dictionary<string, int> vocab, string field, string? token) =>
        token is null ? -1 : vocab.TryGetValue(token, out int id) ? id : throw f.Fail(field, $"token \"{token}\" is not in the vocabulary");
}

/// <summary>
/// Byte-pair encoding as tokenizers' models/bpe does it: one symbol per character (with
/// <c>continuing_subword_prefix</c>/<c>end_of_word_suffix</c>), unknown characters as <c>&lt;0xNN&gt;</c> byte
/// pieces (<c>byte_fallback</c>) or the unknown token (fused when <c>fuse_unk</c>), then merges by rank, lowest
/// rank first and leftmost on ties. With <c>ignore_merges</c> a word that is itself a vocabulary entry is that
/// one id (Llama 3). Results are cached per word: encoding a dataset meets the same words again and again.
/// </summary>
internal sealed class Bpe : TokenModel
{
    private const int CacheCapacity = 200_000, CacheMaxWordLength = 256;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly string? _prefix, _suffix;
    private readonly int _unkId;
    private readonly bool _fuseUnk, _ignoreMerges;
    private readonly int[]? _byteIds;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private int _cacheCount;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;

    private Bpe(Dictionary<string, int> vocab, Dictionary<long, (int, int)> merges, string? prefix, string? suffix,
        int unkId, bool fuseUnk, bool byteFallback, bool ignoreMerges) : base(vocab)
    {
        _merges = merges; _prefix = string.IsNullOrEmpty(prefix) ? null : prefix; _suffix = string.IsNullOrEmpty(suffix) ? null : suffix;
        _unkId = unkId; _fuseUnk = fuseUnk; _ignoreMerges = ignoreMerges;
        _lookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        if (byteFallback)
        {
            _byteIds = new int[256];
            for (int b = 0; b < 256; b++) _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }
    }

    public static Bpe Read(JsonFields f)
    {
        if (f.OptDouble("dropout") is double d && d != 0)
            throw f.Fail("dropout", $"BPE dropout {d} is not supported (it makes encoding random; transformers models ship null)");
        var vocab = ReadVocab(f);
        string? prefix = f.OptString("continuing_subword_prefix"), suffix = f.OptString("end_of_word_suffix");
        int prefixLen = prefix?.Length ?? 0;
        var merges = new Dictionary<long, (int, int)>(PairComparer.Instance);
        int rank = 0;
        foreach (var m in f.Array("merges").EnumerateArray())
        {
            string a, b;
            if (m.ValueKind == JsonValueKind.String)
            {
                string[] parts = m.GetString()!.Split(' ');
                if (parts.Length != 2) throw f.Fail("merges", $"merge {m.GetRawText()} is not two tokens separated by one space");
                (a, b) = (parts[0], parts[1]);
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                     && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                (a, b) = (m[0].GetString()!, m[1].GetString()!);
            else throw f.Fail("merges", $"merge {m.GetRawText()} is neither \"a b\" nor [\"a\", \"b\"]");
            if (!vocab.TryGetValue(a, out int ia)) throw f.Fail("merges", $"merge token \"{a}\" is not in the vocabulary");
            if (!vocab.TryGetValue(b, out int ib)) throw f.Fail("merges", $"merge token \"{b}\" is not in the vocabulary");
            string merged = a + (prefixLen > 0 && b.Length >= prefixLen ? b[prefixLen..] : b);
            if (!vocab.TryGetValue(merged, out int nid)) throw f.Fail("merges", $"merged token \"{merged}\" is not in the vocabulary");
            merges[Key(ia, ib)] = (rank++, nid);
        }
        // As in tokenizers, an unk_token missing from the vocabulary is an error only when a word needs it.
        string? unk = f.OptString("unk_token");
        int unkId = unk is null ? -1 : vocab.TryGetValue(unk, out int u) ? u : -2;
        return new Bpe(vocab, merges, prefix, suffix, unkId, f.Bool("fuse_unk", false), f.Bool("byte_fallback", false), f.Bool("ignore_merges", false));
    }

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    // long.GetHashCode is hi ^ lo, so the pairs (a, b) of small ids collide massively; mix the bits instead.
    private sealed class PairComparer : IEqualityComparer<long>
    {
        public static readonly PairComparer Instance = new();
        public bool Equals(long x, long y) => x == y;
        public int GetHashCode(long x) => (int)(((ulong)x * 0x9E3779B97F4A7C15UL) >> 32);
    }

    public override void Tokenize(string word, List<int> ids)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && Vocab.TryGetValue(word, out int whole)) { ids.Add(whole); return; }
        if (_cache.TryGetValue(word, out int[]? cached)) { ids.AddRange(cached); return; }
        int[] result = MergeWord(word);
        // (ConcurrentDictionary.Count takes every lock: keep an own count.)
        if (word.Length < CacheMaxWordLength && _cacheCount < CacheCapacity && _cache.TryAdd(word, result)) Interlocked.Increment(ref _cacheCount);
        ids.AddRange(result);
    }

    private int[] MergeWord(string w)
    {
        var symbols = new List<int>(w.Length);
        int unk = -1;  // a pending unknown symbol (fuse_unk glues consecutive ones)
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < w.Length;)
        {
            int n = char.IsSurrogatePair(w, i) ? 2 : 1;
            bool first = i == 0, last = i + n == w.Length;
            int id;
            if (_prefix is null && _suffix is null || (first || _prefix is null) && (!last || _suffix is null))
                id = _lookup.TryGetValue(w.AsSpan(i, n), out int v) ? v : -1;
            else
                id = Vocab.TryGetValue((first ? "" : _prefix) + w.Substring(i, n) + (last ? _suffix : ""), out int v2) ? v2 : -1;
            if (id >= 0)
            {
                if (unk >= 0) { symbols.Add(unk); unk = -1; }
                symbols.Add(id);
            }
            else
            {
                bool done = false;
                if (_byteIds is not null)
                {
                    // tokenizers falls back on the bytes of the symbol string (prefix/suffix included).
                    string s = (first || _prefix is null ? "" : _prefix) + w.Substring(i, n) + (last && _suffix is not null ? _suffix : "");
                    byte[] bytes = Encoding.UTF8.GetBytes(s);
                    if (bytes.All(b => _byteIds[b] >= 0))
                    {
                        if (unk >= 0) { symbols.Add(unk); unk = -1; }
                        foreach (byte b in bytes) symbols.Add(_byteIds[b]);
                        done = true;
                    }
                }
                if (!done && _unkId == -2)
                    throw new FineAlignException($"BPE tokenizer: '{w.Substring(i, n)}' is not in the vocabulary and the unk_token is not either");
                if (!done && _unkId >= 0)
                {
                    if (unk >= 0 && !_fuseUnk) symbols.Add(unk);
                    unk = _unkId;
                }
                // No unknown token and no byte pieces: tokenizers drops the character; so do we (same ids).
            }
            i += n;
        }
        if (unk >= 0) symbols.Add(unk);
        return symbols.Count < 2 || _merges.Count == 0 ? symbols.ToArray() : Merge(symbols);
    }

    private int[] Merge(List<int> symbols) => symbols.Count <= 48 ? MergeByScan(symbols) : MergeByQueue(symbols);

    // Short words (nearly all): repeatedly merge the adjacent pair of lowest rank, leftmost on ties. This is
    // the order tokenizers' priority queue pops merges in (it holds exactly the current adjacent pairs), without
    // the queue's allocations.
    private int[] MergeByScan(List<int> symbols)
    {
        int n = symbols.Count;
        Span<int> c = stackalloc int[n];
        for (int i = 0; i < n; i++) c[i] = symbols[i];
        while (n > 1)
        {
            int best = -1, bestRank = int.MaxValue, bestId = 0;
            for (int i = 0; i + 1 < n; i++)
                if (_merges.TryGetValue(Key(c[i], c[i + 1]), out var m) && m.Rank < bestRank) { best = i; bestRank = m.Rank; bestId = m.NewId; }
            if (best < 0) break;
            c[best] = bestId;
            c[(best + 2)..n].CopyTo(c[(best + 1)..]);
            n--;
        }
        return c[..n].ToArray();
    }

    private int[] MergeByQueue(List<int> symbols)
    {
        int n = symbols.Count;
        var c = symbols.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var gone = new bool[n];
        for (int i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
        var queue = new PriorityQueue<(int Pos, int NewId), long>(n);
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGetValue(Key(c[i], c[i + 1]), out var m)) queue.Enqueue((i, m.NewId), ((long)m.Rank << 32) | (uint)i);
        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            if (gone[pos] || next[pos] < 0) continue;
            int right = next[pos];
            if (!_merges.TryGetValue(Key(c[pos], c[right]), out var cur) || cur.NewId != top.NewId) continue;  // stale entry
            c[pos] = top.NewId;
            gone[right] = true;
            next[pos] = next[right];
            if (next[right] >= 0) prev[next[right]] = pos;
            if (prev[pos] >= 0 && _merges.TryGetValue(Key(c[prev[pos]], c[pos]), out var lm))
                queue.Enqueue((prev[pos], lm.NewId), ((long)lm.Rank << 32) | (uint)prev[pos]);
            if (next[pos] >= 0 && _merges.TryGetValue(Key(c[pos], c[next[pos]]), out var rm))
                queue.Enqueue((pos, rm.NewId), ((long)rm.Rank << 32) | (uint)pos);
        }
        var result = new List<int>(n);
        for (int i = 0; i < n; i++) if (!gone[i]) result.Add(c[i]);
        return result.ToArray();
    }
}

/// <summary>WordPiece (BERT): greedy longest-match-first with <c>##</c> continuations; a word it cannot cover is the unknown token.</summary>
internal sealed class WordPiece : TokenModel
{
    private readonly int _unkId, _maxChars;
    private readonly string _prefix;

    private WordPiece(Dictionary<string, int> vocab, int unkId, string prefix, int maxChars) : base(vocab)
    { _unkId = unkId; _prefix = prefix; _maxChars = maxChars; }

    public static WordPiece Read(JsonFields f)
    {
        var vocab = ReadVocab(f);
        string unk = f.OptString("unk_token") ?? "[UNK]";
        if (!vocab.TryGetValue(unk, out int unkId)) throw f.Fail("unk_token", $"token \"{unk}\" is not in the vocabulary");
        return new WordPiece(vocab, unkId, f.OptString("continuing_subword_prefix") ?? "##", f.Int("max_input_chars_per_word", 100));
    }

    public override void Tokenize(string word, List<int> ids)
    {
        if (word.EnumerateRunes().Count() > _maxChars) { ids.Add(_unkId); return; }
        var found = new List<int>();
        int start = 0;
        while (start < word.Length)
        {
            int end = word.Length, id = -1;
            while (start < end)
            {
                string sub = start > 0 ? _prefix + word[start..end] : word[start..end];
                if (Vocab.TryGetValue(sub, out id)) break;
                id = -1;
                end -= char.IsLowSurrogate(word[end - 1]) && end - 2 >= start ? 2 : 1;
            }
            if (id < 0) { ids.Add(_unkId); return; }
            found.Add(id);
            start = end;
        }
        ids.AddRange(found);
    }
}

/// <summary>WordLevel: each word is one vocabulary entry, or the unknown token.</summary>
internal sealed class WordLevel : TokenModel
{
    private readonly int _unkId;

    public WordLevel(Dictionary<string, int> vocab, string? unk, JsonFields f) : base(vocab) =>
        _unkId = RequireToken(f, vocab, "unk_token", unk);

    public override void Tokenize(string word, List<int> ids)
    {
        if (Vocab.TryGetValue(word, out int id)) ids.Add(id);
        else if (_unkId >= 0) ids.Add(_unkId);
        else throw new FineAlignException($"WordLevel tokenizer: \"{word}\" is not in the vocabulary and the model has no unk_token");
    }
}
