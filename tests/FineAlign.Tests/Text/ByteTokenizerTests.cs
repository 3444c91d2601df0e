using System.Text.Json.Nodes;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Text;

public class ByteTokenizerTests
{
    private const string Sample = "<|im_start|>user\nGrüße, 世界! 😀 tabs\tand  spaces<|im_end|>\n<|eos|>";

    [Fact]
    public void Encode_IsUtf8BytesPlusSpecialIds()
    {
        var tok = new ByteTokenizer();
        Assert.Equal(261, tok.VocabSize);
        Assert.Equal([0xC3, 0xA9, 257], tok.Encode("é<|eos|>"));
        Assert.Equal([259, (int)'a', 260, 256, 258], tok.Encode("<|im_start|>a<|im_end|><|bos|><|pad|>"));
        Assert.Equal((256, 257, 258, true), (tok.BosId, tok.EosId, tok.PadId, tok.AddBos));
        Assert.Equal(ChatFormat.ChatML, ChatTemplates.Detect(tok.ChatTemplate));
    }

    [Fact]
    public void Decode_RoundTripsAndSkipsSpecials()
    {
        var tok = new ByteTokenizer();
        int[] ids = tok.Encode(Sample);
        Assert.Equal(Sample, tok.Decode(ids, skipSpecialTokens: false));
        Assert.Equal("user\nGrüße, 世界! 😀 tabs\tand  spaces\n", tok.Decode(ids));
    }

    [Fact]
    public void Decode_InvalidUtf8_GivesReplacementCharacter()
    {
        var tok = new ByteTokenizer();
        // A lone continuation byte, a truncated 3-byte sequence cut by a special token, and an out-of-range id.
        string s = tok.Decode([(int)'a', 0x80, (int)'b', 0xE4, 0xB8, 257, (int)'c', 9999], skipSpecialTokens: false);
        Assert.Equal("a\uFFFDb\uFFFD<|eos|>c\uFFFD", s);
    }

    [Fact]
    public void Save_WritesHuggingFaceFiles_ThatLoadBackWithIdenticalIds()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = new ByteTokenizer();
        tok.Save(dir.Path);

        foreach (string f in new[] { "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
            Assert.True(File.Exists(Path.Combine(dir.Path, f)), f);
        Assert.Equal("#version: 0.2\n", File.ReadAllText(Path.Combine(dir.Path, "merges.txt")));
        var vocab = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "vocab.json")))!.AsObject();
        Assert.Equal(261, vocab.Count);
        Assert.Equal(32, vocab["Ġ"]!.GetValue<int>());   // GPT-2's spelling of the space byte
        Assert.Equal(10, vocab["Ċ"]!.GetValue<int>());   // newline
        var tj = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "tokenizer.json")))!;
        Assert.Equal("BPE", tj["model"]!["type"]!.GetValue<string>());
        Assert.Equal("ByteLevel", tj["pre_tokenizer"]!["type"]!.GetValue<string>());
        Assert.Equal("ByteLevel", tj["decoder"]!["type"]!.GetValue<string>());
        Assert.Equal(5, tj["added_tokens"]!.AsArray().Count);

        // Recognised as a byte tokenizer…
        var loaded = TokenizerLoader.Load(dir.Path);
        Assert.IsType<ByteTokenizer>(loaded);
        Assert.Equal(tok.Encode(Sample), loaded.Encode(Sample));

        // …and the same files read as ordinary HF tokenizers (as transformers would) give identical ids.
        var viaVocab = HfTokenizer.LoadVocabMerges(dir.Path);
        var viaJson = HfTokenizer.LoadTokenizerJson(dir.Path);
        foreach (var hf in new[] { viaVocab, viaJson })
        {
            Assert.Equal(tok.Encode(Sample), hf.Encode(Sample));
            Assert.Equal(Sample, hf.Decode(tok.Encode(Sample), skipSpecialTokens: false));
            Assert.Equal((256, 257, 258), (hf.BosId, hf.EosId, hf.PadId));
            Assert.True(hf.AddBos);
            Assert.Equal(261, hf.VocabSize);
            Assert.Equal(tok.ChatTemplate, hf.ChatTemplate);
        }
    }

    [Fact]
    public void Load_RejectsAFolderWhoseVocabIsNotTheByteLayout()
    {
        using var dir = TestPaths.NewTempDir();
        new ByteTokenizer().Save(dir.Path);
        string vocabPath = Path.Combine(dir.Path, "vocab.json");
        File.WriteAllText(vocabPath, File.ReadAllText(vocabPath).Replace("\"Ġ\": 32", "\"Ġ\": 33"));
        var e = Assert.Throws<FineAlignException>(() => TokenizerLoader.Load(dir.Path));
        Assert.Contains("byte 32", e.Message);
    }
}
