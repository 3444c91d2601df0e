using FineAlign.Data;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Text;

public class ChatTemplatesTests
{
    private static readonly ChatMessage[] TwoTurns =
    [
        new("system", "You are terse."),
        new("user", "Hi"),
        new("assistant", "Hello!"),
        new("user", "2+2?"),
        new("assistant", "4"),
    ];

    [Fact]
    public void ChatML_ExactText()
    {
        Assert.Equal(
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n" +
            "<|im_start|>assistant\n4<|im_end|>\n",
            ChatTemplates.Render(ChatFormat.ChatML, TwoTurns, addGenerationPrompt: false));
        Assert.Equal(
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            ChatTemplates.Render(ChatFormat.ChatML, TwoTurns[..2], addGenerationPrompt: true));
    }

    [Fact]
    public void Llama2_ExactText()
    {
        Assert.Equal(
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] 2+2? [/INST] 4 </s>",
            ChatTemplates.Render(ChatFormat.Llama2, TwoTurns, addGenerationPrompt: false));
        Assert.Equal(
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST]",
            ChatTemplates.Render(ChatFormat.Llama2, TwoTurns[..2], addGenerationPrompt: true));
        Assert.Equal("<s>[INST] Hi [/INST] Hello! </s>", ChatTemplates.Render(ChatFormat.Llama2, TwoTurns[1..3], false));
    }

    [Fact]
    public void Zephyr_ExactText()
    {
        Assert.Equal(
            "<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n" +
            "<|user|>\n2+2?</s>\n<|assistant|>\n4</s>\n",
            ChatTemplates.Render(ChatFormat.Zephyr, TwoTurns, addGenerationPrompt: false));
        Assert.Equal(
            "<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\n",
            ChatTemplates.Render(ChatFormat.Zephyr, TwoTurns[..2], addGenerationPrompt: true));
    }

    [Fact]
    public void Detect_And_Resolve()
    {
        Assert.Equal(ChatFormat.ChatML, ChatTemplates.Detect("{% for m in messages %}<|im_start|>{{ m.role }}..."));
        Assert.Equal(ChatFormat.Llama2, ChatTemplates.Detect("{% set c = '<<SYS>>\\n' + s %}{{ bos_token + '[INST] ' + content + ' [/INST]' }}"));
        Assert.Null(ChatTemplates.Detect("{{ bos_token + '[INST] ' + content + ' [/INST]' }}"));  // Mistral: differs, not guessed
        Assert.Equal(ChatFormat.Zephyr, ChatTemplates.Detect("{{ '<|user|>\n' }}...{{ '<|assistant|>\n' }}"));
        Assert.Null(ChatTemplates.Detect("{{ '### Instruction:' }}"));
        // Resolution now renders any template: the user's preset wins, else the tokenizer's own template is used as it is;
        // only a tokenizer without any template asks for --chat-template.
        var own = new ByteTokenizer { ChatTemplate = "{{ '### Instruction:' }}" };
        Assert.Equal(ChatFormat.Zephyr, ChatTemplates.Resolve("zephyr", own).Preset);
        Assert.Equal("### Instruction:", ChatTemplates.Resolve(null, own).RenderText([new("user", "x")], false));
        var none = new ByteTokenizer { ChatTemplate = null };
        Assert.Contains("--chat-template", Assert.Throws<FineAlignException>(() => ChatTemplates.Resolve(null, none)).Message);
        Assert.Contains("chatml", Assert.Throws<FineAlignException>(() => ChatTemplates.Resolve("alpaca", none)).Message);
        Assert.Contains("chatml", Assert.Throws<FineAlignException>(() => ChatTemplates.Parse("alpaca")).Message);
    }

    [Fact]
    public void Render_RejectsBadRolesAndOrder()
    {
        Assert.Throws<FineAlignException>(() => ChatTemplates.Render(ChatFormat.ChatML, [new("tool", "x")], false));
        Assert.Throws<FineAlignException>(() => ChatTemplates.Render(ChatFormat.ChatML, [new("user", "x"), new("system", "y")], false));
        Assert.Throws<FineAlignException>(() => ChatTemplates.Render(ChatFormat.Llama2, [new("assistant", "x")], false));
        Assert.Throws<FineAlignException>(() => ChatTemplates.Render(ChatFormat.Llama2, [new("user", "x"), new("user", "y")], false));
    }

    /// <summary>The runs of consecutive target tokens, decoded with special tokens kept.</summary>
    internal static List<string> TargetRuns(TextTokenizer tok, TokenizedExample ex)
    {
        var runs = new List<string>();
        var cur = new List<int>();
        for (int t = 0; t <= ex.Length; t++)
        {
            if (t < ex.Length && ex.LossMask[t]) { cur.Add(ex.InputIds[t]); continue; }
            if (cur.Count > 0) { runs.Add(tok.Decode(cur, skipSpecialTokens: false)); cur.Clear(); }
        }
        return runs;
    }

    [Theory]
    [InlineData(ChatFormat.ChatML, "Hello!<|im_end|>", "4<|im_end|>")]
    [InlineData(ChatFormat.Zephyr, "Hello!<|eos|>", "4<|eos|>")]
    [InlineData(ChatFormat.Llama2, " Hello! <|eos|>", " 4 <|eos|>")]
    public void Tokenize_MaskCoversExactlyAssistantRepliesAndEndMarker(ChatFormat format, string first, string second)
    {
        var tok = new ByteTokenizer();
        var segs = ChatTemplates.RenderSegments(format, TwoTurns, false, tok);
        var ex = ChatTemplates.Tokenize(tok, segs);

        Assert.Equal(ex.InputIds.Length, ex.LossMask.Length);
        Assert.Equal([first, second], TargetRuns(tok, ex));
        // The whole sequence is BOS (exactly one) + the rendered text.
        string text = string.Concat(segs.Select(s => s.Text));
        Assert.Equal(256, ex.InputIds[0]);
        Assert.Equal(1, ex.InputIds.Count(i => i == 256) - (format == ChatFormat.Llama2 ? 1 : 0));
        string decoded = tok.Decode(ex.InputIds, skipSpecialTokens: false);
        Assert.Equal(format == ChatFormat.Llama2 ? text : "<|bos|>" + text, decoded);
    }

    [Fact]
    public void Tokenize_SentencePieceLlama2_RoundTripsAndMasksReplies()
    {
        using var dir = TestPaths.NewTempDir();
        TinyTokenizerFiles.WriteSentencePiece(dir.Path);
        var tok = TokenizerLoader.Load(dir.Path);
        var segs = ChatTemplates.RenderSegments(ChatFormat.Llama2, TwoTurns, false, tok);
        var ex = ChatTemplates.Tokenize(tok, segs);

        Assert.Equal(1, ex.InputIds[0]);                        // the template's own <s>, not a second BOS
        Assert.Equal(2, ex.InputIds.Count(i => i == 1));        // one <s> per turn
        Assert.Equal(ChatTemplates.Render(ChatFormat.Llama2, TwoTurns, false), tok.Decode(ex.InputIds, skipSpecialTokens: false));
        var runs = TargetRuns(tok, ex);
        Assert.Equal(["Hello! </s>", "4 </s>"], runs.Select(r => r.TrimStart()).ToArray());
        Assert.Equal(2, ex.InputIds.Where((id, t) => ex.LossMask[t] && id == 2).Count());  // both </s> are targets
    }
}
