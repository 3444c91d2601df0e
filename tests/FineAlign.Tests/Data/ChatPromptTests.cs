using System.Text;
using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Generation;
using FineAlign.Rewards;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Tests.Data;

/// <summary>Conversational prompts for online RL and generation, and stopping at the template's end-of-turn token.</summary>
[Collection("Serial torch RNG")]
public class ChatPromptTests
{
    private static readonly ByteTokenizer Tok = new();

    private static string Write(TempDir dir, params string[] lines)
    {
        string p = Path.Combine(dir.Path, "prompts.jsonl");
        File.WriteAllText(p, string.Join("\n", lines) + "\n", new UTF8Encoding(false));
        return p;
    }

    [Fact]
    public void ConversationalPrompts_AreRenderedWithTheGenerationPrompt()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir,
            """{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]}""",
            """{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "dropped"}]}""");
        var (prompts, anyChat) = PromptReader.ReadDetailed(p, () => ChatTemplates.Resolve(null, Tok));
        Assert.True(anyChat);
        Assert.Equal(["<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                      "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"], prompts);

        // Preference and feedback files with message-list prompts give the rendered prompt too.
        string pairs = Write(dir, """{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "y"}], "rejected": [{"role": "assistant", "content": "n"}]}""");
        Assert.Equal(["<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"], PromptReader.Read(pairs, () => ChatTemplates.Resolve("chatml", Tok)));

        // A text-only file never asks for the template.
        string text = Write(dir, """{"prompt": "plain"}""");
        var (plain, none) = PromptReader.ReadDetailed(text, () => throw new InvalidOperationException("not needed"));
        Assert.Equal(["plain"], plain);
        Assert.False(none);
    }

    [Fact]
    public void PromptText_DropsTheTemplatesBos_WhenTheTokenizerAddsOne()
    {
        // As Llama 3's template writes bos_token itself: generation from text adds BOS once, not twice.
        var chat = new ChatTemplate("{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}", "t", Tok);
        Assert.Equal("[a]>", chat.PromptText([new("user", "a")]));
        Assert.Equal([256, '[', 'a', ']', '>'], chat.EncodePrompt([new("user", "a")]));
    }

    [Fact]
    public void RefusedOrUnrenderablePrompts_NameFileLineAndField()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"prompt": "x"}""", """{"prompt": [{"role": "user", "content": "a"}]}""");
        var e = Assert.Throws<DataFormatException>(() => PromptReader.Read(p, () => ChatTemplates.Resolve(null, Tok)));
        Assert.Equal(2, e.Line);
        Assert.Contains("differs from 'prompt' only of line 1", e.Message);

        string bad = Write(dir, """{"prompt": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}]}""");
        var e2 = Assert.Throws<DataFormatException>(() => PromptReader.Read(bad, () => ChatTemplates.Resolve(null, Tok)));
        Assert.Equal("prompt", e2.Field);
        Assert.Contains("only the first message may be one", e2.Message);

        string noRole = Write(dir, """{"prompt": [{"content": "a"}]}""");
        var e3 = Assert.Throws<DataFormatException>(() => PromptReader.Read(noRole, () => ChatTemplates.Resolve(null, Tok)));
        Assert.Equal("prompt[0].role", e3.Field);
    }

    [Fact]
    public void EndOfTurn_IsTheTemplatesFirstSpecialTokenAfterAReply()
    {
        Assert.Equal(("<|im_end|>", 260), ChatTemplates.Resolve(null, Tok).EndOfTurn);
        Assert.Equal(("<|eos|>", 257), ChatTemplates.Resolve("zephyr", Tok).EndOfTurn);
        // Llama 3-like: the marker written after the reply, not eos.
        var l3 = new ChatTemplate("{% for m in messages %}<|im_start|>{{ m.role }}\n\n{{ m.content }}<|pad|>{% endfor %}<|im_start|>assistant\n\n", "l3", Tok);
        Assert.Equal(("<|pad|>", 258), l3.EndOfTurn);
    }

    [Fact]
    public void PpoRollouts_StopAtTheStopTokens()
    {
        using var tmp = TestPaths.NewTempDir();
        var config = TinyModels.ByteLlama();
        using var policy = ModelFactory.Create(config, 1);
        using var reference = ModelFactory.Create(config, 1);
        using var value = ValueModel.Shared(policy, 1);
        var reward = ProgrammaticRewardSource.Sequence("len", e => e.ResponseIds.Length);
        var options = OnlineRlOptions.Ppo with { OutputDir = tmp.Path, Steps = 1, BatchSize = 4, MiniBatchSize = 2, MaxNewTokens = 8 };
        using var free = new OnlineRlTrainer(policy, reference, value, Tok, reward, ["a", "b", "c", "d"], options);
        using var r0 = free.Rollout(1);
        Assert.True(r0.ResponseIds.shape[1] > 1);   // without stop tokens some response runs on
        // Every id a stop token: each response ends after its first token, as having ended at end of turn.
        using var stopping = new OnlineRlTrainer(policy, reference, value, Tok, reward, ["a", "b", "c", "d"], options with { StopTokenIds = Enumerable.Range(0, 261).ToArray() });
        using var r = stopping.Rollout(1);
        Assert.Equal(1, r.ResponseIds.shape[1]);
        Assert.All(r.EndedWithEos, Assert.True);
    }
}
