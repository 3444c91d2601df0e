using System.Text.Json;
using FineAlign.Data;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Preferences;

/// <summary>PPO prompt files: prompt-only, preference pairs (explicit and HH implicit prompt), feedback; keep-end cuts.</summary>
public class PromptReaderTests
{
    private static string Write(TempDir dir, params object[] lines)
    {
        string path = Path.Combine(dir.Path, "prompts.jsonl");
        File.WriteAllLines(path, lines.Select(l => l as string ?? JsonSerializer.Serialize(l)));
        return path;
    }

    private static object Msg(string role, string content) => new { role, content };

    [Fact]
    public void PromptOnlyLinesAreReadAsGivenWithRepeats()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir, new { prompt = "a" }, new { prompt = "b", extra = 1 }, new { prompt = "a" });
        Assert.Equal(["a", "b", "a"], PromptReader.Read(path));
    }

    [Fact]
    public void HhTranscriptsGiveTheirImplicitPrompt()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir,
            new { chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more?\n\nAssistant: sure", rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more?\n\nAssistant: no" },
            new { chosen = "\n\nHuman: x\n\nAssistant: a", rejected = "\n\nHuman: x\n\nAssistant: b" });
        Assert.Equal(["\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more?\n\nAssistant:", "\n\nHuman: x\n\nAssistant:"], PromptReader.Read(path));
    }

    [Fact]
    public void ExplicitPairsAndFeedbackGiveTheirPromptFieldFeedbackOncePerPrompt()
    {
        using var dir = TestPaths.NewTempDir();
        string pairs = Write(dir, new { prompt = "Q1", chosen = " y", rejected = " n" }, new { prompt = "Q2", chosen = " y", rejected = " n" });
        Assert.Equal(["Q1", "Q2"], PromptReader.Read(pairs));

        string fb = Write(dir, new { prompt = "Q1", completion = " y", label = true }, new { prompt = "Q1", completion = " n", label = false },
                          new { prompt = "Q2", completion = " y", label = true });
        Assert.Equal(["Q1", "Q2"], PromptReader.Read(fb));
    }

    [Fact]
    public void BadLinesNameFileLineAndField()
    {
        using var dir = TestPaths.NewTempDir();
        string mixed = Write(dir, new { prompt = "Q1" }, new { prompt = "Q1", completion = " y", label = true });
        var e1 = Assert.Throws<DataFormatException>(() => PromptReader.Read(mixed));
        Assert.Contains("prompts.jsonl:2", e1.Message);
        Assert.Contains("differs from 'prompt' only of line 1", e1.Message);

        string badLabel = Write(dir, new { prompt = "Q1", completion = " y", label = "yes" });
        var e2 = Assert.Throws<DataFormatException>(() => PromptReader.Read(badLabel));
        Assert.Contains("prompts.jsonl:1", e2.Message);
        Assert.Contains("'label'", e2.Message);

        string chat = Write(dir, new { prompt = new[] { Msg("user", "hi") }, chosen = new[] { Msg("assistant", "a") }, rejected = new[] { Msg("assistant", "b") } });
        var e3 = Assert.Throws<DataFormatException>(() => PromptReader.Read(chat));
        Assert.Contains("'prompt'", e3.Message);
        Assert.Contains("message lists", e3.Message);

        string noPrompt = Write(dir, new { text = "hello" });
        var e4 = Assert.Throws<DataFormatException>(() => PromptReader.Read(noPrompt));
        Assert.Contains("'prompt'", e4.Message);

        string noShared = Write(dir, new { chosen = "abc", rejected = "xyz" });
        var e5 = Assert.Throws<DataFormatException>(() => PromptReader.Read(noShared));
        Assert.Contains("no shared prompt", e5.Message);
    }

    [Fact]
    public void KeepEndCutsToTheBudgetAndStartsAtAHumanTurn()
    {
        var tok = new ByteTokenizer();
        Assert.True(tok.AddBos); // so the budget is maxTokens − 1 bytes
        const string p = "\n\nHuman: first question\n\nAssistant: answer\n\nHuman: q2\n\nAssistant:";
        Assert.Same(p, PromptReader.KeepEnd(p, tok, p.Length + 1));
        // 40 bytes fit: the longest fitting suffix starts inside "answer"; the cut moves on to the turn that starts after it.
        string cut = PromptReader.KeepEnd(p, tok, 41);
        Assert.Equal("\n\nHuman: q2\n\nAssistant:", cut);
        // A budget smaller than the last turn keeps the plain byte suffix.
        Assert.Equal("Assistant:", PromptReader.KeepEnd(p, tok, 11));
        Assert.Equal("xyz", PromptReader.KeepEnd("uvwxyz", tok, 4));
    }
}
