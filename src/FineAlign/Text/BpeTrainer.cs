using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace FineAlign.Text;

/// <summary>
/// Trains a byte-level BPE tokenizer (Sennrich et al. 2016, in GPT-2's byte-level form, Radford et al. 2019) and
/// writes it as a standard Hugging Face <c>tokenizer.json</c> + <c>tokenizer_config.json</c> +
/// <c>special_tokens_map.json</c>: model BPE, ByteLevel pre-tokenizer (GPT-2 regex split) and decoder, merges as
/// <c>[["a", "b"], …]</c> pairs (how tokenizers ≥ 0.20 writes them). Ids: the special tokens first (as
/// <c>tokenizers</c>' BpeTrainer puts them), then the 256 byte characters in code-point order, then one token per
/// merge. Deterministic: the most frequent pair wins, ties go to the smallest (left id, right id) pair — the order
/// <c>tokenizers</c> uses — so the same texts and size give the same files byte for byte.
/// </summary>
public sealed class BpeTrainer
{
    /// <summary>Special tokens, the same strings as <see cref="ByteTokenizer"/> (so ChatML works unchanged).</summary>
    public static readonly string[] DefaultSpecials = ByteTokenizer.Specials;

    public int VocabSize { get; }
    /// <summary>Pairs seen fewer times than this are never merged (the trainer stops early instead).</summary>
    public int MinFrequency { get; init; } = 2;
    public IReadOnlyList<string> SpecialTokens { get; init; } = DefaultSpecials;

    public BpeTrainer(int vocabSize)
    {
        int min = DefaultSpecials.Length + 256;
        if (vocabSize < min) throw new FineAlignException($"vocabulary size {vocabSize} is too small: at least {min} (special tokens + 256 bytes)");
        VocabSize = vocabSize;
    }

    /// <summary>The result: the vocabulary (token → id) and the merges in rank order.</summary>
    public sealed record Model(IReadOnlyList<string> Tokens, IReadOnlyList<(string Left, string Right)> Merges, IReadOnlyList<string> Specials)
    {
        public int VocabSize => Tokens.Count;
    }

    private static readonly Regex Split = new(ByteLevel.Gpt2Pattern, RegexOptions.Compiled);

    /// <summary>Counts the pre-tokenised words of <paramref name="texts"/> and learns merges until the vocabulary is full.</summary>
    public Model Train(IEnumerable<string> texts)
    {
        // 1. Word counts: GPT-2 regex pieces, spelled in byte-level characters. Ordinal-sorted so the order is fixed.
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var text in texts)
            foreach (Match m in Split.Matches(text))
            {
                string w = Spell(m.Value);
                counts[w] = counts.GetValueOrDefault(w) + 1;
            }

        // 2. Initial vocabulary: specials, then every byte character in code-point order.
        var tokens = new List<string>(SpecialTokens);
        var alphabet = Enumerable.Range(0, 256).Select(b => ByteLevel.CharOf((byte)b)).Order().ToList();
        var id = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++) id[tokens[i]] = i;
        foreach (char c in alphabet) { id[c.ToString()] = tokens.Count; tokens.Add(c.ToString()); }

        var words = counts.OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => (Symbols: kv.Key.Select(c => id[c.ToString()]).ToList(), Count: kv.Value)).ToList();

        // 3. Merge loop: recount pairs each round (corpora here have a few thousand distinct words; simple beats clever).
        var merges = new List<(string, string)>();
        while (tokens.Count < VocabSize)
        {
            var pairs = new Dictionary<(int, int), long>();
            foreach (var (sym, n) in words)
                for (int i = 0; i + 1 < sym.Count; i++)
                {
                    var p = (sym[i], sym[i + 1]);
                    pairs[p] = pairs.GetValueOrDefault(p) + n;
                }
            if (pairs.Count == 0) break;
            var best = pairs.Aggregate((a, b) => b.Value > a.Value || (b.Value == a.Value && Less(b.Key, a.Key)) ? b : a);
            if (best.Value < MinFrequency) break;
            var (l, r) = best.Key;
            string merged = tokens[l] + tokens[r];
            int newId;
            if (!id.TryGetValue(merged, out newId)) { newId = tokens.Count; id[merged] = newId; tokens.Add(merged); }
            merges.Add((tokens[l], tokens[r]));
            foreach (var (sym, _) in words)
                for (int i = 0; i + 1 < sym.Count; i++)
                    if (sym[i] == l && sym[i + 1] == r) { sym[i] = newId; sym.RemoveAt(i + 1); }
        }
        return new Model(tokens, merges, SpecialTokens.ToList());
    }

    private static bool Less((int, int) a, (int, int) b) => a.Item1 < b.Item1 || (a.Item1 == b.Item1 && a.Item2 < b.Item2);

    private static string Spell(string piece)
    {
        var bytes = Encoding.UTF8.GetBytes(piece);
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(ByteLevel.CharOf(b));
        return sb.ToString();
    }

    /// <summary>
    /// Writes <c>tokenizer.json</c>, <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c> into
    /// <paramref name="folder"/> (each atomically). The first three specials are BOS, EOS and PAD; BOS is added to
    /// every sequence (TemplateProcessing), the rest are additional special tokens; the chat template is ChatML.
    /// </summary>
    public static void Save(Model model, string folder)
    {
        if (model.Specials.Count < 3) throw new FineAlignException("a saved BPE tokenizer needs at least BOS, EOS and PAD special tokens");
        Directory.CreateDirectory(folder);
        var opts = new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        string bos = model.Specials[0], eos = model.Specials[1], pad = model.Specials[2];
        var extra = model.Specials.Skip(3).ToList();

        var vocab = new JsonObject();
        for (int i = 0; i < model.Tokens.Count; i++) vocab[model.Tokens[i]] = i;
        var merges = new JsonArray();
        foreach (var (l, r) in model.Merges) merges.Add(new JsonArray(l, r));
        var specials = model.Specials.Select((t, i) => (i, t)).ToList();
        var tokenizerJson = ByteLevelBpeJson.Tokenizer(vocab, merges, specials, bos, 0);
        AtomicFile.WriteAllText(Path.Combine(folder, "tokenizer.json"), tokenizerJson.ToJsonString(opts));

        var decoder = ByteLevelBpeJson.AddedTokensDecoder(specials);
        var config = new JsonObject
        {
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
            ["add_bos_token"] = true,
            ["add_eos_token"] = false,
            ["bos_token"] = bos, ["eos_token"] = eos, ["pad_token"] = pad,
            ["additional_special_tokens"] = new JsonArray(extra.Select(e => (JsonNode?)e).ToArray()),
            ["added_tokens_decoder"] = decoder,
            ["chat_template"] = ByteTokenizer.ChatMLJinja,
            ["clean_up_tokenization_spaces"] = false,
            ["model_max_length"] = 1000000000000000019884624838656.0,
        };
        AtomicFile.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), config.ToJsonString(opts));
        var map = new JsonObject
        {
            ["bos_token"] = bos, ["eos_token"] = eos, ["pad_token"] = pad,
            ["additional_special_tokens"] = new JsonArray(extra.Select(e => (JsonNode?)e).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(folder, "special_tokens_map.json"), map.ToJsonString(opts));
    }
}
