using FineAlign.Tests.Support;
using FineAlign.Text;
using static FineAlign.Tests.Text.TinyTokenizerFiles;

namespace FineAlign.Tests.Text;

public class HfTokenizerTests
{
    // "Hello wörld<|endoftext|>": merges give He, ll; 'o'; "Ġw" merge; ö = C3 B6 as two byte tokens; r l d; special.
    private static readonly int[] HelloIds = [He, Ll, 'o', SpaceW, 0xC3, 0xB6, 'r', 'l', 'd', EndOfText];

    [Fact]
    public void VocabMerges_EncodesWithMergesBytesAndSpecialTokens()
    {
        using var dir = TestPaths.NewTempDir();
        WriteVocabMerges(dir.Path);
        var tok = HfTokenizer.LoadVocabMerges(dir.Path);

        Assert.Equal(HfTokenizerKind.VocabMerges, tok.Kind);
        Assert.Equal(HelloIds, tok.Encode("Hello wörld<|endoftext|>"));
        Assert.Equal("Hello wörld", tok.Decode(HelloIds));
        Assert.Equal("Hello wörld<|endoftext|>", tok.Decode(HelloIds, skipSpecialTokens: false));
        Assert.Equal([ImStart, 'u', ImEnd], tok.Encode("<|im_start|>u<|im_end|>"));
        Assert.Equal(262, tok.VocabSize);
        Assert.Equal(["He", "ll", "o", "Ġw", "<|endoftext|>"], new[] { He, Ll, 'o', SpaceW, EndOfText }.Select(tok.IdToToken));
        Assert.True(tok.IsSpecialToken(EndOfText));
        Assert.Equal(EndOfText, tok.EosId);
        Assert.Equal(EndOfText, tok.BosId);  // given as {"content": ...}
        Assert.Equal("<|endoftext|>", tok.EosToken);
        Assert.False(tok.AddBos);            // GPT-2 default
        Assert.Equal(EndOfText, tok.PaddingId);
        Assert.Contains("<|im_start|>", tok.ChatTemplate);
    }

    [Fact]
    public void TokenizerJson_ByteLevelBpe_MatchesVocabMergesIds()
    {
        using var dir = TestPaths.NewTempDir();
        WriteTokenizerJson(dir.Path);
        var tok = HfTokenizer.LoadTokenizerJson(dir.Path);
        Assert.Equal(HfTokenizerKind.TokenizerJson, tok.Kind);
        Assert.Equal(HelloIds, tok.Encode("Hello wörld<|endoftext|>"));
        Assert.True(tok.AddBos);
        Assert.Equal(EndOfText, tok.BosId);
        Assert.Equal([ImStart, ImEnd], tok.Encode("<|im_start|><|im_end|>"));
        Assert.Same(tok.GetType(), TokenizerLoader.Load(dir.Path).GetType());
    }

    [Fact]
    public void TokenizerJson_PostProcessorTemplate_MeansAddBos()
    {
        using var dir = TestPaths.NewTempDir();
        WriteTokenizerJson(dir.Path);
        string path = Path.Combine(dir.Path, "tokenizer.json");
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        root["post_processor"] = System.Text.Json.Nodes.JsonNode.Parse(
            """{"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}]}""");
        File.WriteAllText(path, root.ToJsonString());
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"), """{"eos_token": "<|endoftext|>"}""");
        var tok = HfTokenizer.LoadTokenizerJson(dir.Path);
        Assert.True(tok.AddBos);
        Assert.Equal(("<|im_start|>", ImStart), (tok.BosToken, tok.BosId));
    }

    [Fact]
    public void TokenizerJson_UnsupportedModel_NamesTypeAndAlternatives()
    {
        using var dir = TestPaths.NewTempDir();
        WriteTokenizerJson(dir.Path, modelType: "Unigram");
        var e = Assert.Throws<FineAlignException>(() => TokenizerLoader.Load(dir.Path));
        Assert.Contains("'Unigram'", e.Message);
        Assert.Contains("tokenizer.model", e.Message);
        Assert.Contains("vocab.json + merges.txt", e.Message);
    }

    [Fact]
    public void Loader_FallsBackToVocabMerges_WhenTokenizerJsonUnsupported()
    {
        using var dir = TestPaths.NewTempDir();
        WriteTokenizerJson(dir.Path, modelType: "WordPiece");
        WriteVocabMerges(dir.Path);
        var tok = Assert.IsType<HfTokenizer>(TokenizerLoader.Load(dir.Path));
        Assert.Equal(HfTokenizerKind.VocabMerges, tok.Kind);
        Assert.Equal(HelloIds, tok.Encode("Hello wörld<|endoftext|>"));
    }

    [Fact]
    public void Loader_PrefersTokenizerJsonOverTokenizerModel_AsTransformersFastTokenizersDo()
    {
        using var dir = TestPaths.NewTempDir();
        WriteSentencePiece(dir.Path);
        WriteTokenizerJson(dir.Path);
        Assert.Equal(HfTokenizerKind.TokenizerJson, Assert.IsType<HfTokenizer>(TokenizerLoader.Load(dir.Path)).Kind);
        // A tokenizer.json with a refused component falls back to tokenizer.model.
        WriteTokenizerJson(dir.Path, modelType: "Unigram");
        Assert.Equal(HfTokenizerKind.SentencePiece, Assert.IsType<HfTokenizer>(TokenizerLoader.Load(dir.Path)).Kind);
    }

    [Fact]
    public void Loader_EmptyFolder_ListsWhatItLookedFor()
    {
        using var dir = TestPaths.NewTempDir();
        var e = Assert.Throws<FineAlignException>(() => TokenizerLoader.Load(dir.Path));
        Assert.Contains("tokenizer.model", e.Message);
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("vocab.json + merges.txt", e.Message);
        Assert.Throws<FineAlignException>(() => TokenizerLoader.Load(Path.Combine(dir.Path, "missing")));
    }

    private const string LlamaConfig = """
        {"add_bos_token": true, "add_eos_token": false,
         "bos_token": {"content": "<s>", "lstrip": false, "normalized": false},
         "eos_token": {"content": "</s>"},
         "unk_token": "<unk>",
         "added_tokens_decoder": {"268": {"content": "<pad>", "special": true}},
         "chat_template": [{"name": "default", "template": "{{ bos_token + '[INST] ' + m + ' [/INST]' }}"},
                           {"name": "tool_use", "template": "x"}]}
        """;

    [Fact]
    public void SentencePiece_HandMadeModel_EncodesDecodesAndReadsConfig()
    {
        using var dir = TestPaths.NewTempDir();
        WriteSentencePiece(dir.Path, LlamaConfig);
        File.WriteAllText(Path.Combine(dir.Path, "special_tokens_map.json"), """{"pad_token": {"content": "<pad>"}}""");
        var tok = Assert.IsType<HfTokenizer>(TokenizerLoader.Load(dir.Path));

        Assert.Equal(HfTokenizerKind.SentencePiece, tok.Kind);
        // Dummy prefix: "hi lo" = "▁hi▁lo" → ▁hi, ▁, lo (no "▁lo" piece).
        Assert.Equal([SpId("▁hi"), SpId("▁"), SpId("lo")], tok.Encode("hi lo"));
        // Mid-sequence continuation has no invented leading space.
        Assert.Equal([SpId("h"), SpId("i"), SpId("▁"), SpId("lo")], tok.EncodeContinuation("hi lo"));
        // Byte fallback for é (C3 A9): byte pieces sit at 3 + byte.
        Assert.Equal([SpId("▁hi"), SpId("▁"), 3 + 0xC3, 3 + 0xA9], tok.Encode("hi é"));
        Assert.Equal("hi é", tok.Decode(tok.Encode("hi é")));
        // Special tokens in text, including an added one beyond the SentencePiece vocabulary.
        Assert.Equal([SpId("▁hi"), 2, 268], tok.Encode("hi</s><pad>"));
        Assert.Equal("hi", tok.Decode([1, SpId("▁hi"), 2, 268]));
        Assert.Equal("<s>hi</s><pad>", tok.Decode([1, SpId("▁hi"), 2, 268], skipSpecialTokens: false));

        Assert.Equal((1, 2, 268, 0), (tok.BosId, tok.EosId, tok.PadId, tok.UnkId));
        Assert.Equal("<pad>", tok.PadToken);
        Assert.True(tok.AddBos);
        Assert.Equal(269, tok.VocabSize);
        Assert.StartsWith("{{ bos_token + '[INST] '", tok.ChatTemplate);  // the "default" of a template list
    }

    [Theory]
    [InlineData("x[I] hi")]      // byte pieces first, then a '▁' piece: ML.Tokenizers alone loses that space
    [InlineData("[/INST] 2+2? é")]
    [InlineData("hi  lo\n\nhi")]
    public void SentencePiece_DecodeRoundTripsText(string text)
    {
        using var dir = TestPaths.NewTempDir();
        WriteSentencePiece(dir.Path);
        var tok = HfTokenizer.LoadSentencePiece(dir.Path);
        Assert.Equal(text, tok.Decode(tok.Encode(text)));
        Assert.Equal(text, tok.Decode(tok.EncodeContinuation(text)));
    }

    [Fact]
    public void SentencePiece_WithoutConfig_UsesModelSpecialsAndAddsBos()
    {
        using var dir = TestPaths.NewTempDir();
        WriteSentencePiece(dir.Path);
        var tok = HfTokenizer.LoadSentencePiece(dir.Path);
        Assert.Equal((1, 2, "<s>", "</s>"), (tok.BosId, tok.EosId, tok.BosToken, tok.EosToken));
        Assert.True(tok.AddBos);
        Assert.Null(tok.PadId);
        Assert.Equal(2, tok.PaddingId);  // falls back to EOS
        Assert.Null(tok.ChatTemplate);
    }

    [Fact]
    public void Save_CopiesOriginalFiles_AndReloadsIdentically()
    {
        using var src = TestPaths.NewTempDir();
        using var dst = TestPaths.NewTempDir();
        WriteSentencePiece(src.Path, LlamaConfig);
        var tok = TokenizerLoader.Load(src.Path);
        tok.Save(dst.Path);
        Assert.Equal(File.ReadAllBytes(Path.Combine(src.Path, "tokenizer.model")), File.ReadAllBytes(Path.Combine(dst.Path, "tokenizer.model")));
        var again = TokenizerLoader.Load(dst.Path);
        Assert.Equal(tok.Encode("hi lo é</s>"), again.Encode("hi lo é</s>"));
        Assert.Equal(tok.ChatTemplate, again.ChatTemplate);
    }
}
