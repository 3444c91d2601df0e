using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FineAlign.Text;

/// <summary>
/// Built-in byte-level tokenizer for models trained from scratch: ids 0..255 are the UTF-8 bytes, then
/// five special tokens: 256 <c>&lt;|bos|&gt;</c>, 257 <c>&lt;|eos|&gt;</c>, 258 <c>&lt;|pad|&gt;</c>,
/// 259 <c>&lt;|im_start|&gt;</c>, 260 <c>&lt;|im_end|&gt;</c> (so ChatML needs no extra tokens). BOS is added.
/// Saved as a GPT-2 byte-level BPE with no merges, which is exactly this tokenizer, so Hugging Face
/// tools (and <see cref="HfTokenizer"/>) load it with identical ids.
/// </summary>
public sealed class ByteTokenizer : TextTokenizer
{
    public const string Bos = "<|bos|>", Eos = "<|eos|>", Pad = "<|pad|>", ImStart = "<|im_start|>", ImEnd = "<|im_end|>";
    /// <summary>Special tokens in id order, starting at 256.</summary>
    public static readonly string[] Specials = [Bos, Eos, Pad, ImStart, ImEnd];

    /// <summary>The ChatML template stored in tokenizer_config.json: the ChatML preset, with {% generation %} blocks.</summary>
    public const string ChatMLJinja = ChatTemplates.ChatMLJinja;

    /// <summary>Marker key in tokenizer_config.json that lets <see cref="TokenizerLoader"/> recognise the folder.</summary>
    public const string ConfigMarkerKey = "finealign_tokenizer";

    public ByteTokenizer()
    {
        BosToken = Bos; BosId = 256;
        EosToken = Eos; EosId = 257;
        PadToken = Pad; PadId = 258;
        AddBos = true;
        ChatTemplate = ChatMLJinja;
    }

    public override int VocabSize => 256 + Specials.Length;

    public override int[] Encode(string text)
    {
        // No special token can occur without "<|": one UTF-8 pass into the result (a long document costs its ids,
        // not also a list, a substring and a byte copy).
        if (!text.Contains("<|", StringComparison.Ordinal))
        {
            int count = Encoding.UTF8.GetByteCount(text);
            var bytes = System.Buffers.ArrayPool<byte>.Shared.Rent(Math.Clamp(count, 4096, 1 << 20));
            var result = new int[count];
            int at = 0;
            // In chunks, so the byte buffer stays small; chunk ends never split a surrogate pair.
            for (int i = 0; i < text.Length;)
            {
                int len = Math.Min(text.Length - i, bytes.Length / 3);
                if (len < text.Length - i && char.IsHighSurrogate(text[i + len - 1])) len--;
                int n = Encoding.UTF8.GetBytes(text.AsSpan(i, len), bytes);
                for (int k = 0; k < n; k++) result[at++] = bytes[k];
                i += len;
            }
            System.Buffers.ArrayPool<byte>.Shared.Return(bytes);
            return result;
        }
        var ids = new List<int>(text.Length + 8);
        int start = 0;
        while (start < text.Length)
        {
            // Next special token occurrence (earliest; longest on ties).
            int best = -1, bestIdx = -1;
            for (int s = 0; s < Specials.Length; s++)
            {
                int i = text.IndexOf(Specials[s], start, StringComparison.Ordinal);
                if (i >= 0 && (best < 0 || i < best || (i == best && Specials[s].Length > Specials[bestIdx].Length)))
                { best = i; bestIdx = s; }
            }
            int end = best < 0 ? text.Length : best;
            foreach (byte b in Encoding.UTF8.GetBytes(text.Substring(start, end - start))) ids.Add(b);
            if (best < 0) break;
            ids.Add(256 + bestIdx);
            start = best + Specials[bestIdx].Length;
        }
        return ids.ToArray();
    }

    public override string? IdToToken(int id) =>
        id is >= 0 and < 256 ? ByteLevel.CharOf((byte)id).ToString() : id >= 256 && id < VocabSize ? Specials[id - 256] : null;

    public override bool IsSpecialToken(int id) => id >= 256 && id < VocabSize;

    /// <summary>Invalid UTF-8 byte sequences decode to U+FFFD (never throws).</summary>
    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        void Flush() { if (bytes.Count > 0) { sb.Append(Encoding.UTF8.GetString(bytes.ToArray())); bytes.Clear(); } }
        foreach (int id in ids)
        {
            if (id is >= 0 and < 256) { bytes.Add((byte)id); continue; }
            Flush();
            if (id >= 256 && id < VocabSize) { if (!skipSpecialTokens) sb.Append(Specials[id - 256]); }
            else sb.Append('\uFFFD');  // out-of-range id (e.g. sampled from a larger LM head)
        }
        Flush();
        return sb.ToString();
    }

    /// <summary>
    /// Writes vocab.json, merges.txt (header only), tokenizer.json (BPE, ByteLevel pre-tokenizer and decoder,
    /// BOS post-processor), tokenizer_config.json and special_tokens_map.json.
    /// </summary>
    public override void Save(string folder)
    {
        Directory.CreateDirectory(folder);
        var opts = new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevel.CharOf((byte)b).ToString()] = b;
        for (int s = 0; s < Specials.Length; s++) vocab[Specials[s]] = 256 + s;
        File.WriteAllText(Path.Combine(folder, "vocab.json"), vocab.ToJsonString(opts));
        File.WriteAllText(Path.Combine(folder, "merges.txt"), "#version: 0.2\n");

        var specials = Specials.Select((t, s) => (256 + s, t)).ToList();
        var tokenizerJson = ByteLevelBpeJson.Tokenizer(JsonNode.Parse(vocab.ToJsonString())!.AsObject(), new JsonArray(), specials, Bos, 256);
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), tokenizerJson.ToJsonString(opts));

        var decoder = ByteLevelBpeJson.AddedTokensDecoder(specials);
        var config = new JsonObject
        {
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
            [ConfigMarkerKey] = "byte",
            ["add_bos_token"] = AddBos,
            ["add_eos_token"] = false,
            ["bos_token"] = Bos, ["eos_token"] = Eos, ["pad_token"] = Pad,
            ["additional_special_tokens"] = new JsonArray(ImStart, ImEnd),
            ["added_tokens_decoder"] = decoder,
            ["chat_template"] = ChatTemplate,
            ["clean_up_tokenization_spaces"] = false,
            ["model_max_length"] = 1000000000000000019884624838656.0,
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), config.ToJsonString(opts));

        var map = new JsonObject
        {
            ["bos_token"] = Bos, ["eos_token"] = Eos, ["pad_token"] = Pad,
            ["additional_special_tokens"] = new JsonArray(ImStart, ImEnd),
        };
        File.WriteAllText(Path.Combine(folder, "special_tokens_map.json"), map.ToJsonString(opts));
    }

    /// <summary>Reads a folder written by <see cref="Save"/> (checks that the vocabulary is the byte layout).</summary>
    public static ByteTokenizer Load(string folder)
    {
        string vocabPath = Path.Combine(folder, "vocab.json");
        var vocab = TokenizerSettings.ReadObject(vocabPath)
            ?? throw new FineAlignException($"{vocabPath}: file not found (a FineAlign byte tokenizer folder needs it)");
        var t = new ByteTokenizer();
        for (int b = 0; b < 256; b++)
            if (IdOf(vocab[ByteLevel.CharOf((byte)b).ToString()]) != b)
                throw new FineAlignException($"{vocabPath}: not a FineAlign byte tokenizer (byte {b} does not have id {b})");
        for (int s = 0; s < Specials.Length; s++)
            if (IdOf(vocab[Specials[s]]) != 256 + s)
                throw new FineAlignException($"{vocabPath}: not a FineAlign byte tokenizer ('{Specials[s]}' does not have id {256 + s})");
        var settings = TokenizerSettings.Read(folder);
        return new ByteTokenizer { AddBos = settings.AddBosToken ?? true, ChatTemplate = settings.ChatTemplate };
    }

    // GetValue<int> throws on a non-integer ("a": [1]); a damaged vocab must give the message above instead.
    private static int? IdOf(System.Text.Json.Nodes.JsonNode? n) =>
        n is System.Text.Json.Nodes.JsonValue v && v.TryGetValue(out int id) ? id : null;
}
