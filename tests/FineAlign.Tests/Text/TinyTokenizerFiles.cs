using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Text;

namespace FineAlign.Tests.Text;

/// <summary>Writes tiny tokenizer folders for tests (hand-made protobuf and vocab files).</summary>
internal static class TinyTokenizerFiles
{
    // ---- SentencePiece ModelProto (sentencepiece_model.proto), written field by field.
    // Pieces (Llama layout): 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then the normal pieces below.
    public static readonly (string Piece, float Score)[] NormalPieces =
    [
        ("▁h", -1), ("▁hi", -2), ("lo", -3), ("▁", -4), ("h", -5), ("i", -6), ("l", -7), ("o", -8), ("a", -9),
    ];
    public const int FirstNormalId = 259;
    public static int SpId(string piece) => FirstNormalId + Array.FindIndex(NormalPieces, p => p.Piece == piece);

    public static byte[] SentencePieceModel()
    {
        var m = new List<byte>();
        void AddPiece(string piece, float score, int type)
        {
            var p = new List<byte>();
            Str(p, 1, piece); Flt(p, 2, score); Int(p, 3, type);
            Bytes(m, 1, p.ToArray());
        }
        AddPiece("<unk>", 0, 2);           // UNKNOWN
        AddPiece("<s>", 0, 3);             // CONTROL
        AddPiece("</s>", 0, 3);
        for (int b = 0; b < 256; b++) AddPiece($"<0x{b:X2}>", 0, 6);  // BYTE
        foreach (var (piece, score) in NormalPieces) AddPiece(piece, score, 1);  // NORMAL

        var trainer = new List<byte>();
        Int(trainer, 3, 2);                       // model_type = BPE
        Int(trainer, 4, FirstNormalId + NormalPieces.Length);  // vocab_size
        Int(trainer, 35, 1);                      // byte_fallback
        Int(trainer, 40, 0); Int(trainer, 41, 1); Int(trainer, 42, 2); Int(trainer, 43, -1);  // unk/bos/eos/pad ids
        Bytes(m, 2, trainer.ToArray());

        var norm = new List<byte>();
        Str(norm, 1, "identity");
        Int(norm, 3, 1);  // add_dummy_prefix
        Int(norm, 4, 0);  // remove_extra_whitespaces
        Int(norm, 5, 1);  // escape_whitespaces
        Bytes(m, 3, norm.ToArray());
        return m.ToArray();
    }

    private static void Varint(List<byte> o, ulong v) { while (v >= 0x80) { o.Add((byte)(v | 0x80)); v >>= 7; } o.Add((byte)v); }
    private static void Tag(List<byte> o, int field, int wire) => Varint(o, (ulong)((field << 3) | wire));
    private static void Bytes(List<byte> o, int field, byte[] b) { Tag(o, field, 2); Varint(o, (ulong)b.Length); o.AddRange(b); }
    private static void Str(List<byte> o, int field, string s) => Bytes(o, field, Encoding.UTF8.GetBytes(s));
    private static void Int(List<byte> o, int field, long v) { Tag(o, field, 0); Varint(o, unchecked((ulong)v)); }
    private static void Flt(List<byte> o, int field, float v) { Tag(o, field, 5); o.AddRange(BitConverter.GetBytes(v)); }

    public static void WriteSentencePiece(string folder, string? tokenizerConfig = null)
    {
        File.WriteAllBytes(Path.Combine(folder, "tokenizer.model"), SentencePieceModel());
        if (tokenizerConfig is not null) File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), tokenizerConfig);
    }

    // ---- GPT-2 style byte-level BPE: 256 byte tokens, three merges, <|endoftext|> = 259.
    public const int He = 256, Ll = 257, SpaceW = 258, EndOfText = 259, ImStart = 260, ImEnd = 261;
    public static readonly string[] Merges = ["H e", "l l", "Ġ w"];

    public static JsonObject Gpt2Vocab()
    {
        var v = new JsonObject();
        for (int b = 0; b < 256; b++) v[ByteLevel.CharOf((byte)b).ToString()] = b;
        v["He"] = He; v["ll"] = Ll; v["Ġw"] = SpaceW; v["<|endoftext|>"] = EndOfText;
        return v;
    }

    public const string Gpt2Config = """
        {"tokenizer_class": "GPT2Tokenizer",
         "bos_token": {"content": "<|endoftext|>", "lstrip": false},
         "eos_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>",
         "added_tokens_decoder": {"260": {"content": "<|im_start|>", "special": true},
                                  "261": {"content": "<|im_end|>", "special": true}},
         "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"}
        """;

    public static void WriteVocabMerges(string folder)
    {
        File.WriteAllText(Path.Combine(folder, "vocab.json"), Gpt2Vocab().ToJsonString());
        File.WriteAllText(Path.Combine(folder, "merges.txt"), "#version: 0.2\n" + string.Join("\n", Merges) + "\n");
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), Gpt2Config);
    }

    /// <summary>The same tokenizer as a tokenizer.json (merges in the newer [a, b] form).</summary>
    public static void WriteTokenizerJson(string folder, string modelType = "BPE")
    {
        var merges = new JsonArray();
        foreach (string m in Merges) { var p = m.Split(' '); merges.Add(new JsonArray(p[0], p[1])); }
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = EndOfText, ["content"] = "<|endoftext|>", ["special"] = true },
                new JsonObject { ["id"] = ImStart, ["content"] = "<|im_start|>", ["special"] = true },
                new JsonObject { ["id"] = ImEnd, ["content"] = "<|im_end|>", ["special"] = true }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = modelType, ["vocab"] = Gpt2Vocab(), ["merges"] = merges },
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), root.ToJsonString());
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"),
            """{"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "add_bos_token": true}""");
    }
}
