using System.Text;
using FineAlign.Data;
using FineAlign.Tests.Support;
using FineAlign.Tests.Text;
using FineAlign.Text;

namespace FineAlign.Tests.Data;

public class SftTests
{
    private const int Bos = 256, Eos = 257;
    private static readonly ByteTokenizer Tok = new();

    private static string Write(TempDir dir, params string[] lines)
    {
        string p = Path.Combine(dir.Path, "sft.jsonl");
        File.WriteAllText(p, string.Join("\n", lines) + "\n", new UTF8Encoding(false));
        return p;
    }

    [Fact]
    public void PromptCompletion_BosPromptCompletionEos_LossOnCompletionAndEos()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"prompt": "Hi", "completion": "Yo"}""");
        var ds = SftDataset.Load(p, Tok, new SftOptions());
        var ex = Assert.Single(ds.Examples);
        Assert.Equal(SftFormat.PromptCompletion, ds.Format);
        Assert.Equal([Bos, 'H', 'i', 'Y', 'o', Eos], ex.InputIds);
        Assert.Equal([false, false, false, true, true, true], ex.LossMask);

        var full = SftDataset.Load(p, Tok, new SftOptions { CompletionOnlyLoss = false }).Examples[0];
        Assert.Equal([false, true, true, true, true, true], full.LossMask);
    }

    [Fact]
    public void Text_AllTokensButFirstAreTargets()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"text": "ab"}""", "", """{"text": "c"}""");
        var ds = SftDataset.Load(p, Tok, new SftOptions());
        Assert.Equal(SftFormat.Text, ds.Format);
        Assert.Equal([Bos, 'a', 'b', Eos], ds.Examples[0].InputIds);
        Assert.Equal([false, true, true, true], ds.Examples[0].LossMask);
        Assert.Equal([Bos, 'c', Eos], ds.Examples[1].InputIds);
    }

    [Fact]
    public void Messages_AssistantOnlyMask_WithTokenizerTemplate()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}""");
        var ds = SftDataset.Load(p, Tok, new SftOptions());
        var ex = ds.Examples[0];
        Assert.Equal(SftFormat.Messages, ds.Format);
        Assert.Equal(["Yo<|im_end|>", "A<|im_end|>"], ChatTemplatesTests.TargetRuns(Tok, ex));
        Assert.Equal("<|bos|><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n" +
                     "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n", Tok.Decode(ex.InputIds, false));

        var zephyr = SftDataset.Load(p, Tok, new SftOptions { ChatTemplate = "zephyr" }).Examples[0];
        Assert.Equal(["Yo<|eos|>", "A<|eos|>"], ChatTemplatesTests.TargetRuns(Tok, zephyr));
    }

    [Fact]
    public void ConversationalPromptCompletion_TrainsOnlyCompletionReplies()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A2"}]}""");
        var ds = SftDataset.Load(p, Tok, new SftOptions());
        Assert.Equal(SftFormat.ConversationalPromptCompletion, ds.Format);
        Assert.Equal(["A2<|im_end|>"], ChatTemplatesTests.TargetRuns(Tok, ds.Examples[0]));
    }

    [Fact]
    public void UnknownTemplateWithoutName_AsksForChatTemplateOption()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}""");
        var tok = new ByteTokenizer { ChatTemplate = "{{ '### Human: ' + m }}" };
        var e = Assert.Throws<FineAlignException>(() => SftDataset.Load(p, tok, new SftOptions()));
        Assert.Contains("--chat-template", e.Message);
        Assert.Single(SftDataset.Load(p, tok, new SftOptions { ChatTemplate = "chatml" }).Examples);
    }

    [Theory]
    [InlineData("""{"text": "x"}""", 2, null, "format 'text' differs from 'prompt'+'completion' (strings) of line 1")]
    [InlineData("""{"prompt": "", "completion": "b"}""", 2, "prompt", "is empty")]
    [InlineData("""{"prompt": "a", "completion": ""}""", 2, "completion", "is empty")]
    [InlineData("""{"prompt": "a"}""", 2, "completion", "missing")]
    [InlineData("""{"prompt": "a", "completion": 3}""", 2, "completion", "expected a string, got number 3")]
    [InlineData("""{"foo": 1}""", 2, null, "no SFT fields")]
    public void BadLines_NameLineAndField(string badLine, long line, string? field, string problem)
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"prompt": "a", "completion": "b"}""", badLine);
        var e = Assert.Throws<DataFormatException>(() => SftDataset.Load(p, Tok, new SftOptions()));
        Assert.Equal(line, e.Line);
        Assert.Equal(field, e.Field);
        Assert.Contains(problem, e.Message);
    }

    [Theory]
    [InlineData("""{"messages": [{"role": "user", "content": "Hi"}]}""", "messages", "no assistant message")]
    [InlineData("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "x"}]}""", "messages[1].role", "'bot'")]
    [InlineData("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant"}]}""", "messages[1].content", "missing")]
    [InlineData("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}""", "messages[1].content", "is empty")]
    [InlineData("""{"messages": "hello"}""", "messages", "expected a list of messages, got string")]
    [InlineData("""{"prompt": [{"role": "user", "content": "Hi"}], "completion": "x"}""", "completion", "a list of messages")]
    [InlineData("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "S"}, {"role": "assistant", "content": "x"}]}""", "messages", "only the first message")]
    public void BadMessages_NameLineAndField(string badLine, string field, string problem)
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, badLine);
        var e = Assert.Throws<DataFormatException>(() => SftDataset.Load(p, Tok, new SftOptions()));
        Assert.Equal(1, e.Line);
        Assert.Equal(field, e.Field);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void OverLength_Truncate_KeepsStartAndWarnsWithCount()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir,
            """{"prompt": "Hi", "completion": "Yo"}""",      // 6 tokens → cut to 5
            """{"prompt": "a", "completion": "b"}""",        // 4 tokens, fits
            """{"prompt": "Hello", "completion": "x"}""");   // 8 tokens; the cut leaves no completion → skipped
        var warnings = new List<string>();
        var ds = SftDataset.Load(p, Tok, new SftOptions { MaxLength = 5 }, warnings.Add);
        Assert.Equal(2, ds.Truncated);
        Assert.Equal(1, ds.Skipped);
        Assert.Equal(2, ds.Examples.Count);
        Assert.Equal([Bos, 'H', 'i', 'Y', 'o'], ds.Examples[0].InputIds);
        Assert.Equal([false, false, false, true, true], ds.Examples[0].LossMask);
        Assert.Equal([Bos, 'a', 'b', Eos], ds.Examples[1].InputIds);
        var w = Assert.Single(warnings);
        Assert.Contains("2 of 3 examples", w);
        Assert.Contains("1 kept no completion token", w);
    }

    [Fact]
    public void OverLength_Error_NamesLineAndLengths()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"prompt": "a", "completion": "b"}""", """{"prompt": "Hi", "completion": "Yo"}""");
        var e = Assert.Throws<DataFormatException>(() =>
            SftDataset.Load(p, Tok, new SftOptions { MaxLength = 5, OverLength = OverLengthPolicy.Error }));
        Assert.Equal(2, e.Line);
        Assert.Contains("6 tokens", e.Message);
        Assert.Contains("maximum length 5", e.Message);
    }

    [Fact]
    public void SentencePieceTokenizer_PromptCompletionContinuesWithoutDummyPrefix()
    {
        using var dir = TestPaths.NewTempDir();
        TinyTokenizerFiles.WriteSentencePiece(dir.Path);
        var tok = TokenizerLoader.Load(dir.Path);
        var ex = new SftEncoder(tok, new SftOptions()).EncodeFull(new PromptCompletionExample(1, "hi", " lo"));
        int S(string piece) => TinyTokenizerFiles.SpId(piece);
        // <s> ▁hi | ▁ lo </s>: the completion's leading space is its own, not a second dummy prefix.
        Assert.Equal([1, S("▁hi"), S("▁"), S("lo"), 2], ex.InputIds);
        Assert.Equal([false, false, true, true, true], ex.LossMask);
    }

    [Theory]
    [InlineData("chatml")]
    [InlineData("llama2")]
    [InlineData("zephyr")]
    public void EncodePrompt_IsAPrefixOfTheTrainedSequence(string template)
    {
        using var dir = TestPaths.NewTempDir();
        TinyTokenizerFiles.WriteSentencePiece(dir.Path);
        foreach (TextTokenizer tok in new TextTokenizer[] { Tok, TokenizerLoader.Load(dir.Path) })
        {
            var enc = new SftEncoder(tok, new SftOptions { ChatTemplate = template });
            ChatMessage[] prompt = [new("system", "be kind"), new("user", "hi lo")];
            var full = enc.EncodeFull(new ChatExample(1, [.. prompt, new("assistant", "hi")], 0));
            int[] p = enc.EncodePrompt(prompt);
            Assert.Equal(p, full.InputIds[..p.Length]);
            Assert.DoesNotContain(true, full.LossMask[..p.Length]);
            Assert.True(full.LossMask[p.Length]);  // the first trained token follows the prompt directly
        }
        var pc = new SftEncoder(Tok, new SftOptions());
        Assert.Equal([Bos, 'H', 'i'], pc.EncodePrompt("Hi"));
    }
}
