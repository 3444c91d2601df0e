using System.Text.Json;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Text;

/// <summary>
/// Hand-made tokenizer.json files for the components the four real tokenizers do not exercise. A WordLevel
/// model whose vocabulary is the expected words makes the pre-tokeniser's output visible as token strings.
/// Expected values come from the Rust tokenizers' own unit tests (named in each test) or its source.
/// </summary>
public class TokenizerJsonComponentTests
{
    private static HfTokenizer Build(TempDir dir, string[] words, string? normalizer = null, string? preTokenizer = null,
        string addedTokens = "[]", string? post = null, string? decoder = null, string? model = null)
    {
        var vocab = new Dictionary<string, int> { ["[UNK]"] = 0 };
        foreach (string w in words) vocab.TryAdd(w, vocab.Count);
        model ??= $$"""{"type": "WordLevel", "vocab": {{JsonSerializer.Serialize(vocab)}}, "unk_token": "[UNK]"}""";
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer.json"), $$"""
            {"version": "1.0", "truncation": null, "padding": null, "added_tokens": {{addedTokens}},
             "normalizer": {{normalizer ?? "null"}}, "pre_tokenizer": {{preTokenizer ?? "null"}},
             "post_processor": {{post ?? "null"}}, "decoder": {{decoder ?? "null"}}, "model": {{model}}}
            """);
        return HfTokenizer.LoadTokenizerJson(dir.Path);
    }

    private static string[] Pieces(HfTokenizer tok, string text, bool special = false) =>
        tok.Encode(text, special).Select(id => tok.IdToToken(id) ?? $"<no piece for {id}>").ToArray();

    private static string Added(int id, string content, bool special = true, bool lstrip = false, bool rstrip = false,
        bool singleWord = false, bool? normalized = null) =>
        JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["id"] = id, ["content"] = content, ["special"] = special, ["lstrip"] = lstrip, ["rstrip"] = rstrip,
            ["single_word"] = singleWord, ["normalized"] = normalized ?? !special,
        });

    // tokenizers pre_tokenizers/split.rs test `basic`: the whitespace regex, inverted, with each behaviour.
    [Theory]
    [InlineData("Removed", new[] { "How", "are", "you", "doing", "?" })]
    [InlineData("Isolated", new[] { "How", " ", "are", " ", "you", " ", "doing", "?" })]
    [InlineData("MergedWithPrevious", new[] { "How ", "are ", "you ", "doing", "?" })]
    [InlineData("MergedWithNext", new[] { "How", " are", " you", " doing", "?" })]
    [InlineData("Contiguous", new[] { "How", " ", "are", " ", "you", " ", "doing?" })]
    public void Split_EveryBehaviourWithInvert(string behavior, string[] expected)
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, expected, preTokenizer:
            $$"""{"type": "Split", "pattern": {"Regex": "\\w+|[^\\w\\s]+"}, "behavior": "{{behavior}}", "invert": true}""");
        Assert.Equal(expected, Pieces(tok, "How are you doing?"));
    }

    // split.rs test `invert`: splitting on " " (removed) equals keeping the inverted matches of "Hello".
    [Fact]
    public void Split_StringPattern_InvertRemovedKeepsTheMatches()
    {
        using var dir = TestPaths.NewTempDir();
        var plain = Build(dir, ["Hello"], preTokenizer: """{"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": false}""");
        using var dir2 = TestPaths.NewTempDir();
        var inverted = Build(dir2, ["Hello"], preTokenizer: """{"type": "Split", "pattern": {"String": "Hello"}, "behavior": "Removed", "invert": true}""");
        Assert.Equal(["Hello", "Hello", "Hello"], Pieces(plain, "Hello Hello Hello"));
        Assert.Equal(Pieces(plain, "Hello Hello Hello"), Pieces(inverted, "Hello Hello Hello"));
        // Without invert, Removed drops the matches and keeps the text between them.
        using var dir3 = TestPaths.NewTempDir();
        var removed = Build(dir3, ["a", "b"], preTokenizer: """{"type": "Split", "pattern": {"String": "--"}, "behavior": "Removed", "invert": false}""");
        Assert.Equal(["a", "b"], Pieces(removed, "--a----b--"));
    }

    // pre_tokenizers/punctuation.rs test `punctuation_basic`.
    [Fact]
    public void Punctuation_IsolatesEachPunctuationCharacter()
    {
        using var dir = TestPaths.NewTempDir();
        string[] want = ["Hey friend", "!", "     How are you", "?", "!", "?"];
        var tok = Build(dir, want, preTokenizer: """{"type": "Punctuation", "behavior": "Isolated"}""");
        Assert.Equal(want, Pieces(tok, "Hey friend!     How are you?!?"));
    }

    // pre_tokenizers/digits.rs tests `numbers` and `individual_digits`.
    [Theory]
    [InlineData(false, new[] { "Hey ", "123", " friend!" })]
    [InlineData(true, new[] { "Hey ", "1", "2", "3", " friend!" })]
    public void Digits_ContiguousOrIndividual(bool individual, string[] want)
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, want, preTokenizer: $$"""{"type": "Digits", "individual_digits": {{(individual ? "true" : "false")}}}""");
        Assert.Equal(want, Pieces(tok, "Hey 123 friend!"));
    }

    // pre_tokenizers/whitespace.rs tests: \w+|[^\w\s]+ kept, whitespace dropped; WhitespaceSplit keeps punctuation attached.
    [Fact]
    public void Whitespace_AndWhitespaceSplit()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, ["Hey", "man", "!", "naïve", "café", "...", "x"], preTokenizer: """{"type": "Whitespace"}""");
        Assert.Equal(["Hey", "man", "!"], Pieces(tok, "Hey man!"));
        Assert.Equal(["naïve", "café", "...", "x"], Pieces(tok, "  naïve\tcafé...\n x"));
        using var dir2 = TestPaths.NewTempDir();
        var split = Build(dir2, ["Hey", "man!"], preTokenizer: """{"type": "WhitespaceSplit"}""");
        Assert.Equal(["Hey", "man!"], Pieces(split, "Hey \u00A0man!"));
    }

    // normalizers: Strip (both sides), Lowercase, Prepend (only on non-empty text), NFKC, Replace with a regex.
    [Fact]
    public void Normalizers_StripLowercasePrependNfkcReplace()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, ["▁hello", "world", "▁fi", "▁a", "b"],
            normalizer: """
                {"type": "Sequence", "normalizers": [
                  {"type": "Strip", "strip_left": true, "strip_right": true}, {"type": "NFKC"}, {"type": "Lowercase"},
                  {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Prepend", "prepend": "▁"}]}
                """,
            preTokenizer: """{"type": "WhitespaceSplit"}""");
        Assert.Equal(["▁hello", "world"], Pieces(tok, "  Hello \t World \n"));
        Assert.Equal(["▁fi"], Pieces(tok, "\uFB01"));        // NFKC: the ligature ﬁ is "fi"
        Assert.Equal(["▁a", "b"], Pieces(tok, "A\n\n B"));
        Assert.Empty(tok.Encode("   "));                       // stripped to nothing: Prepend adds nothing
    }

    // SentencePiece-style normaliser (Mistral, Llama 2): Prepend "▁" to every section, including the one after an
    // added token (as tokenizers applies normalisers per section); a continuation gets no dummy prefix.
    [Fact]
    public void PrependNormalizer_PerSection_AndNotOnContinuations()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, ["▁hi▁there", "hi▁there", "▁x"], addedTokens: $"[{Added(100, "</s>")}]",
            normalizer: """{"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}""");
        Assert.Equal(["▁hi▁there", "</s>", "▁x"], Pieces(tok, "hi there</s>x"));
        Assert.Equal(["hi▁there", "</s>", "▁x"], tok.EncodeContinuation("hi there</s>x").Select(id => tok.IdToToken(id) ?? "?").ToArray());
    }

    // pre_tokenizers/metaspace.rs test `non_legacy_meta_space`: "first" prepends only at offset 0 of the text,
    // not after an added token; "always" prepends to every section.
    [Theory]
    [InlineData("first", new[] { "▁Hey▁my▁friend▁", "<s>", "how▁are▁you" })]
    [InlineData("always", new[] { "▁Hey▁my▁friend▁", "<s>", "▁how▁are▁you" })]
    [InlineData("never", new[] { "Hey▁my▁friend▁", "<s>", "how▁are▁you" })]
    public void Metaspace_PrependSchemes(string scheme, string[] want)
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, want, addedTokens: $"[{Added(100, "<s>")}]",
            preTokenizer: $$"""{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "{{scheme}}", "split": false}""",
            decoder: $$"""{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "{{scheme}}", "split": false}""");
        Assert.Equal(want, Pieces(tok, "Hey my friend <s>how▁are you"));
        // Decoding (metaspace.rs decode_chain): '▁' is a space, except that every '▁' of the first token is dropped
        // unless the scheme is "never" (the first token is normally just "▁word").
        Assert.Equal(scheme switch { "never" => "Hey my friend <s>how are you", "always" => "Heymyfriend<s> how are you", _ => "Heymyfriend<s>how are you" },
            tok.Decode(tok.Encode("Hey my friend <s>how▁are you"), skipSpecialTokens: false));
    }

    [Fact]
    public void Metaspace_SplitMergesWithNext()
    {
        using var dir = TestPaths.NewTempDir();
        string[] want = ["▁Hey", "▁friend", "▁", "▁there"];
        var tok = Build(dir, want, preTokenizer: """{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}""");
        Assert.Equal(want, Pieces(tok, "Hey friend  there"));
    }

    // tokenizer/added_vocabulary.rs test `options_use_cases`: lstrip/rstrip swallow the spaces, normalized tokens
    // match the lowercased text, single_word refuses "ony" inside "anthony".
    [Fact]
    public void AddedTokens_StripSingleWordAndNormalized()
    {
        using var dir = TestPaths.NewTempDir();
        string added = $"[{Added(10, "my", special: false, lstrip: true, rstrip: true)}, {Added(11, "name", special: false)}, " +
                       $"{Added(12, "ony", special: false, singleWord: true)}, {Added(13, "[CLS]")}, {Added(14, "[SEP]")}]";
        var tok = Build(dir, ["is", "anthony"], addedTokens: added,
            normalizer: """{"type": "Lowercase"}""", preTokenizer: """{"type": "WhitespaceSplit"}""");
        Assert.Equal([13, 10, 11, tok.TokenizerJson!.TokenToId("is")!.Value, tok.TokenizerJson.TokenToId("anthony")!.Value, 14],
            tok.Encode("[CLS] My name is Anthony [SEP]"));
    }

    // added_vocabulary.rs test `test_single_word_is_correct`.
    [Fact]
    public void AddedTokens_SingleWord_OnlyBetweenNonWordCharacters()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, ["my", "name", "a<mask>", "<mask>ony"], addedTokens: $"[{Added(20, "<mask>", special: false, singleWord: true)}]",
            normalizer: """{"type": "Lowercase"}""", preTokenizer: """{"type": "WhitespaceSplit"}""");
        Assert.Equal(["<mask>", "my", "name", "<mask>", "a<mask>", "<mask>ony", "<mask>"],
            Pieces(tok, "<mask> My name <mask> A<mask> <mask>ony <mask>"));
    }

    [Fact]
    public void SkipSpecialDecoding_KeepsNonSpecialAddedTokens()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, ["a", "b"], addedTokens: $"[{Added(5, "<think>", special: false, normalized: false)}, {Added(6, "<|end|>")}]",
            preTokenizer: """{"type": "WhitespaceSplit"}""", decoder: """{"type": "Fuse"}""");
        int[] ids = tok.Encode("<think>a b<|end|>");
        Assert.Equal([5, 1, 2, 6], ids);
        Assert.Equal("<think>ab", tok.Decode(ids, skipSpecialTokens: true));
        Assert.Equal("<think>ab<|end|>", tok.Decode(ids, skipSpecialTokens: false));
        Assert.False(tok.IsSpecialToken(5));
        Assert.True(tok.IsSpecialToken(6));
    }

    // WordPiece (BERT): greedy longest match with ## continuations, [UNK] for a word it cannot cover; BertNormalizer
    // lowercases and strips accents; BertProcessing adds [CLS] … [SEP]; the WordPiece decoder glues ## pieces and
    // cleans " !" (decoders/wordpiece.rs).
    [Fact]
    public void WordPiece_BertPipeline()
    {
        using var dir = TestPaths.NewTempDir();
        var vocab = new Dictionary<string, int> { ["[UNK]"] = 0, ["[CLS]"] = 1, ["[SEP]"] = 2, ["un"] = 3, ["##aff"] = 4, ["##able"] = 5, ["hello"] = 6, ["!"] = 7 };
        var tok = Build(dir, [], addedTokens: $"[{Added(0, "[UNK]")}, {Added(1, "[CLS]")}, {Added(2, "[SEP]")}]",
            normalizer: """{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}""",
            preTokenizer: """{"type": "BertPreTokenizer"}""",
            post: """{"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]}""",
            decoder: """{"type": "WordPiece", "prefix": "##", "cleanup": true}""",
            model: $$"""{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {{JsonSerializer.Serialize(vocab)}}}""");
        Assert.Equal([3, 4, 5, 6, 7], tok.Encode("UNaffáble hello!"));
        Assert.Equal([1, 3, 4, 5, 0, 2], tok.Encode("unaffable xyz", addSpecialTokens: true));
        Assert.Equal("unaffable hello!", tok.Decode([1, 3, 4, 5, 6, 7, 2]));
    }

    // models/bpe/model.rs tokenize_with_cache: with ignore_merges a word that is a vocabulary entry is that id.
    [Theory]
    [InlineData(true, new[] { 5 })]
    [InlineData(false, new[] { 3, 2 })]
    public void Bpe_IgnoreMerges(bool ignore, int[] want)
    {
        using var dir = TestPaths.NewTempDir();
        string model = $$"""
            {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": {{(ignore ? "true" : "false")}},
             "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}, "merges": ["a b"]}
            """;
        var tok = Build(dir, [], model: model);
        Assert.Equal(want, tok.Encode("abc"));
    }

    // models/bpe/model.rs merge_word: unknown characters become <0xNN> pieces with byte_fallback, else the unk token
    // (consecutive ones fused with fuse_unk).
    [Fact]
    public void Bpe_ByteFallbackAndFusedUnknowns()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, [], model: """
            {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
             "vocab": {"<unk>": 0, "a": 1, "<0xC3>": 2, "<0xA9>": 3}, "merges": []}
            """);
        Assert.Equal([1, 2, 3, 0, 1], tok.Encode("aé中文a"));  // é = C3 A9 has byte pieces; 中文 has none: one fused <unk>
    }

    [Fact]
    public void Decoders_ReplaceByteFallbackFuseStrip()
    {
        using var dir = TestPaths.NewTempDir();
        var tok = Build(dir, [], decoder: """
            {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
              {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
            """, model: """{"type": "BPE", "vocab": {"▁Hi": 0, "<0xC3>": 1, "<0xA9>": 2, "<0xFF>": 3, "▁there": 4}, "merges": []}""");
        Assert.Equal("Hié there", tok.Decode([0, 1, 2, 4]));
        Assert.Equal("Hi\uFFFD there", tok.Decode([0, 3, 4]));  // an invalid byte run: one U+FFFD per byte
    }

    // Oniguruma syntax .NET spells differently: possessive quantifiers are atomic groups; \w includes all marks.
    [Theory]
    [InlineData(@"a?+b", @"(?>a?)b")]
    [InlineData(@"[^\s\p{L}]++[\r\n]*", @"(?>[^\s\p{L}]+)[\r\n]*")]
    [InlineData(@"(ab)*+c", @"(?>(ab)*)c")]
    [InlineData(@"(?i:'s|'t)|\p{N}{1,3}+", @"(?i:'s|'t)|(?>\p{N}{1,3})")]
    [InlineData(@"a+?b|\s+(?!\S)", @"a+?b|\s+(?!\S)")]
    [InlineData(@"\w+|[^\w\s]+", @"[\p{L}\p{M}\p{Nd}\p{Pc}]+|[^\p{L}\p{M}\p{Nd}\p{Pc}\s]+")]
    public void OnigurumaPatterns_AreRewrittenForDotNet(string onig, string dotnet) =>
        Assert.Equal(dotnet, FineAlign.Text.Pipeline.UnicodeRegex.OnigToDotNet(onig));

    // tiktoken's cl100k pattern with possessive quantifiers splits as the non-possessive form Llama 3 ships.
    [Fact]
    public void PossessivePattern_SplitsAsItsNonPossessiveForm()
    {
        const string possessive = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        const string plain = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        var a = new FineAlign.Text.Pipeline.UnicodeRegex(possessive, "f", "w");
        var b = new FineAlign.Text.Pipeline.UnicodeRegex(plain, "f", "w");
        foreach (string text in new[] { "Hello world's 12345 !!!\n\n  foo", "I'M DONE...\r\n\r\ny", "😀abc  😀😀 x", "a\t\tb   \n" })
            Assert.Equal(b.Matches(text).ToList(), a.Matches(text).ToList());
        // Devanagari "कि": the vowel sign is a spacing mark (Mc), part of a word for Oniguruma's \w.
        Assert.Equal(new[] { (0, 2) }, new FineAlign.Text.Pipeline.UnicodeRegex(@"\w+", "f", "w").Matches("\u0915\u093F").ToList());
    }

    // ---------------------------------------------------------------- bad input: one line naming file and place

    [Theory]
    [InlineData("""{"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "Foo"}]}""", "pre_tokenizer.pretokenizers[1]", "'Foo'")]
    [InlineData("""{"type": "ByteLevel", "add_prefix_space": "yes"}""", "pre_tokenizer.add_prefix_space", "expected true or false")]
    [InlineData("""{"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"}""", "pre_tokenizer.pattern.Regex", "regex")]
    [InlineData("""{"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"}""", "pre_tokenizer.behavior", "'Sideways'")]
    [InlineData("""{"type": "UnicodeScripts"}""", "pre_tokenizer", "'UnicodeScripts' is not supported")]
    [InlineData("""{"pretokenizers": []}""", "pre_tokenizer", "no 'type'")]
    public void BadPreTokenizer_IsAOneLineErrorNamingFileAndPlace(string pre, string where, string what)
    {
        using var dir = TestPaths.NewTempDir();
        var e = Assert.Throws<FineAlignException>(() => Build(dir, ["a"], preTokenizer: pre));
        Assert.StartsWith(Path.Combine(dir.Path, "tokenizer.json") + ": " + where, e.Message);
        Assert.Contains(what, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData("""{"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0}""", "model type 'Unigram'")]
    [InlineData("""{"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}""", "merge token \"b\" is not in the vocabulary")]
    [InlineData("""{"type": "BPE", "vocab": {"a": "zero"}, "merges": []}""", "model.vocab: token \"a\" has id \"zero\"")]
    [InlineData("""{"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}""", "dropout")]
    [InlineData("""{"type": "Magic"}""", "unknown model type 'Magic'")]
    public void BadModel_IsRefusedNamingIt(string model, string what)
    {
        using var dir = TestPaths.NewTempDir();
        var e = Assert.Throws<FineAlignException>(() => Build(dir, [], model: model));
        Assert.Contains("tokenizer.json: model", e.Message);
        Assert.Contains(what, e.Message);
    }

    [Fact]
    public void BadNormalizerDecoderPostProcessor_AreRefusedNamingThem()
    {
        using var dir = TestPaths.NewTempDir();
        Assert.Contains("normalizer: normalizer 'Precompiled'", Assert.Throws<FineAlignException>(() =>
            Build(dir, [], normalizer: """{"type": "Precompiled", "precompiled_charsmap": "AA=="}""")).Message);
        Assert.Contains("decoder.decoders[0]: unknown decoder type 'Nope'", Assert.Throws<FineAlignException>(() =>
            Build(dir, [], decoder: """{"type": "Sequence", "decoders": [{"type": "Nope"}]}""")).Message);
        Assert.Contains("post_processor: unknown post-processor type 'X'", Assert.Throws<FineAlignException>(() =>
            Build(dir, [], post: """{"type": "X"}""")).Message);
        Assert.Contains("added_tokens[0].id: expected an integer", Assert.Throws<FineAlignException>(() =>
            Build(dir, [], addedTokens: """[{"id": "1", "content": "<s>"}]""")).Message);
    }

    [Fact]
    public void DeviceOrNonJson_IsRefusedWithTheFileNamed()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Path.Combine(dir.Path, "tokenizer.json");
        Assert.Equal("/dev/zero: is not a regular file (a device or pipe?); expected a tokenizer file",
            Assert.Throws<FineAlignException>(() => TokenizerFiles.ReadAllBytes("/dev/zero")).Message);
        // A symlink out of the folder (here to the device) is refused before anything is read.
        File.CreateSymbolicLink(path, "/dev/zero");
        var e = Assert.Throws<FineAlignException>(() => HfTokenizer.LoadTokenizerJson(dir.Path));
        Assert.StartsWith($"{path}: is a symlink to /dev/zero, which lies outside the model folder", e.Message);
        File.Delete(path);
        File.WriteAllText(path, "{\"model\": ");
        Assert.StartsWith($"{path}: invalid JSON", Assert.Throws<FineAlignException>(() => HfTokenizer.LoadTokenizerJson(dir.Path)).Message);
    }
}
