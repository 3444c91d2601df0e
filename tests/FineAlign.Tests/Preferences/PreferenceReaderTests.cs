using System.Text.Json;
using FineAlign.Data;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Preferences;

/// <summary>Preference and feedback files in every layout, and the bad inputs the issue lists.</summary>
public class PreferenceReaderTests
{
    private static readonly ByteTokenizer Tok = new();
    private static readonly PreferenceEncoding Enc = new() { MaxLength = 64 };

    private static string Write(TempDir dir, params object[] lines)
    {
        string path = Path.Combine(dir.Path, "data.jsonl");
        File.WriteAllLines(path, lines.Select(l => l as string ?? JsonSerializer.Serialize(l)));
        return path;
    }

    private static object Msg(string role, string content) => new { role, content };

    [Fact]
    public void PromptChosenRejectedStringsEncodeAsPromptPlusScoredCompletion()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir, new { prompt = "Q?", chosen = " yes", rejected = " no", margin = 1.5 });
        var ds = PreferenceDataset.Load(path, Tok, Enc);
        var p = Assert.Single(ds.Pairs);
        Assert.Equal(PreferenceFormat.PromptChosenRejected, ds.Format);
        Assert.Equal(1.5, p.Margin);
        Assert.Equal(Tok.Encode("Q?"), p.Chosen.Prompt[^2..]);
        Assert.Equal(p.Chosen.Prompt, p.Rejected.Prompt);
        // completion bytes + EOS, all scored
        Assert.Equal(" yes".Length + 1, p.Chosen.ScoredTokens);
        Assert.Equal(Tok.EosId, p.Rejected.Completion[^1]);
        var ex = p.Chosen.ToExample();
        Assert.Equal(p.Chosen.Length, ex.Length);
        Assert.DoesNotContain(true, ex.LossMask[..p.Chosen.Prompt.Length]);
    }

    [Fact]
    public void ConversationalAndImplicitConversationsSplitAtTheSharedPrompt()
    {
        using var dir = TestPaths.NewTempDir();
        var prompt = new[] { Msg("user", "hi") };
        string path = Write(dir, new { prompt, chosen = new[] { Msg("assistant", "hello") }, rejected = new[] { Msg("assistant", "go away") } });
        var explicitPair = Assert.Single(PreferenceReader.Read(path));
        Assert.Equal(PreferenceFormat.ConversationalPromptChosenRejected, explicitPair.Format);

        string implicitPath = Write(dir, new
        {
            chosen = new[] { Msg("user", "hi"), Msg("assistant", "hello") },
            rejected = new[] { Msg("user", "hi"), Msg("assistant", "go away") },
        });
        var imp = Assert.Single(PreferenceReader.Read(implicitPath));
        Assert.Equal(PreferenceFormat.ConversationalImplicitPrompt, imp.Format);
        var chat = Assert.IsType<ChatExample>(imp.Chosen);
        Assert.Equal(1, chat.PromptCount);
        // Both layouts tokenise to the same pair.
        var enc = new PreferenceEncoder(Tok, Enc with { ChatTemplate = "chatml", MaxLength = 256 });
        var a = enc.Encode(explicitPair, path, new EncodingReport())!;
        var b = enc.Encode(imp, implicitPath, new EncodingReport())!;
        Assert.Equal(a.Chosen.ToExample().InputIds, b.Chosen.ToExample().InputIds);
        Assert.Equal(a.Rejected.Completion, b.Rejected.Completion);
    }

    [Fact]
    public void HhRlhfLinesSplitAtTheLastSharedAssistantTurn()
    {
        string path = TestPaths.RequireShared("data/hh-rlhf-harmless/harmless-base-2000.jsonl");
        var raw = File.ReadLines(path).Take(50).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var pairs = PreferenceReader.Read(path).Take(50).ToList();
        Assert.All(pairs, p => Assert.Equal(PreferenceFormat.ImplicitPrompt, p.Format));
        for (int i = 0; i < pairs.Count; i++)
        {
            var c = Assert.IsType<PromptCompletionExample>(pairs[i].Chosen);
            var r = Assert.IsType<PromptCompletionExample>(pairs[i].Rejected);
            Assert.EndsWith("\n\nAssistant:", c.Prompt);
            Assert.Equal(raw[i].GetProperty("chosen").GetString(), c.Prompt + c.Completion);
            Assert.Equal(raw[i].GetProperty("rejected").GetString(), r.Prompt + r.Completion);
            Assert.DoesNotContain("\n\nHuman:", c.Completion);   // the last turn only
            Assert.NotEqual(c.Completion, r.Completion);
        }
        // HH prompts are long: with a prompt limit the pairs keep the prompt's end.
        var ds = PreferenceDataset.FromExamples(pairs, path, Tok, new PreferenceEncoding { MaxLength = 96, MaxPromptLength = 48 });
        Assert.All(ds.Pairs, p => Assert.True(p.Chosen.Prompt.Length <= 48 && p.Chosen.Length <= 96));
        Assert.Equal(Tok.Encode("\n\nAssistant:"), ds.Pairs[0].Chosen.Prompt[^"\n\nAssistant:".Length..]);
    }

    [Fact]
    public void SplitImplicitPromptIgnoresMarkersPastTheCommonPrefix()
    {
        var s = PreferenceReader.SplitImplicitPrompt("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
                                                     "\n\nHuman: a\n\nAssistant: x");
        Assert.NotNull(s);
        Assert.Equal("\n\nHuman: a\n\nAssistant:", s!.Value.Prompt);
        Assert.Equal(" b\n\nHuman: c\n\nAssistant: d", s.Value.Chosen);
        Assert.Equal(" x", s.Value.Rejected);
        Assert.Null(PreferenceReader.SplitImplicitPrompt("Hello there", "Hello you"));
    }

    [Fact]
    public void PreTokenisedPairsAreUsedAsGiven()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir, new { prompt_input_ids = new[] { 5, 6 }, chosen_input_ids = new[] { 7, 8, 2 }, rejected_input_ids = new[] { 9 }, score_chosen = 3.0, score_rejected = 1.0 });
        var p = Assert.Single(PreferenceDataset.Load(path, Tok, Enc).Pairs);
        Assert.Equal(new[] { 5, 6, 7, 8, 2 }, p.Chosen.ToExample().InputIds);
        Assert.Equal(new[] { false, false, true, true, true }, p.Chosen.ToExample().LossMask);
        Assert.Equal(new[] { 5, 6, 9 }, p.Rejected.ToExample().InputIds);
        Assert.Equal(2.0, p.Margin);
    }

    [Fact]
    public void NoSignalAndTooLongPairsAreSkippedAndCounted()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir,
            new { prompt = "Q", chosen = " a", rejected = " b" },
            new { prompt = "Q", chosen = " same", rejected = " same" },
            new { prompt = "Q", chosen = "  ", rejected = " b" },
            new { prompt = new string('x', 200), chosen = " a", rejected = " b" });
        var warnings = new List<string>();
        var ds = PreferenceDataset.Load(path, Tok, Enc, warnings.Add);
        Assert.Single(ds.Pairs);
        Assert.Equal(2, ds.Report.SkippedNoSignal);
        Assert.Equal(2, ds.Report.FirstNoSignalLine);
        Assert.Equal(1, ds.Report.SkippedTooLong);
        Assert.Equal(4, ds.Report.FirstTooLongLine);
        var w = Assert.Single(warnings);
        Assert.Contains("2 skipped with no preference signal", w);
        Assert.Contains("first at line 4", w);
    }

    [Theory]
    [InlineData("{\"prompt\":\"Q\",\"chosen\":\"a\",\"rejected\":\"b\"}\n{\"chosen\":\"\\n\\nHuman: q\\n\\nAssistant: a\",\"rejected\":\"\\n\\nHuman: q\\n\\nAssistant: b\"}", ":2:", "differs from")]
    [InlineData("{\"prompt\":\"Q\",\"chosen\":\"a\"}", ":1: field 'rejected'", "missing")]
    [InlineData("{\"prompt\":\"Q\",\"chosen\":\"a\",\"rejected\":7}", ":1: field 'rejected'", "expected a string")]
    [InlineData("{\"chosen\":\"Hello there\",\"rejected\":\"Hello you\"}", ":1: field 'chosen'", "no shared prompt")]
    [InlineData("{\"prompt\":\"Q\",\"chosen\":\"a\",\"rejected\":\"b\",\"margin\":\"big\"}", ":1: field 'margin'", "expected a number")]
    public void BadPreferenceLinesNameFileLineAndField(string content, string where, string what)
    {
        using var dir = TestPaths.NewTempDir();
        string path = Path.Combine(dir.Path, "bad.jsonl");
        File.WriteAllText(path, content);
        var e = Assert.Throws<DataFormatException>(() => PreferenceDataset.Load(path, Tok, Enc));
        Assert.Contains("bad.jsonl" + where, e.Message);
        Assert.Contains(what, e.Message);
    }

    [Fact]
    public void FeedbackLayoutsAndUnpairedPreferences()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir, new { prompt = "Q", completion = " good", label = true }, new { prompt = "Q", completion = " bad", label = false });
        var ds = FeedbackDataset.Load(path, Tok, Enc);
        Assert.Equal((1, 1), (ds.Desirable, ds.Undesirable));
        Assert.Equal(FeedbackFormat.PromptCompletionLabel, ds.Format);

        string tokPath = Write(dir, new { prompt_input_ids = new[] { 3, 4 }, completion_input_ids = new[] { 5 }, label = false });
        var t = Assert.Single(FeedbackDataset.Load(tokPath, Tok, Enc).Examples);
        Assert.False(t.Label);
        Assert.Equal(new[] { 3, 4, 5 }, t.Sequence.ToExample().InputIds);

        string pairPath = Write(dir, new { prompt = "Q", chosen = " a", rejected = " b" });
        var unpaired = FeedbackDataset.Load(pairPath, Tok, Enc);
        Assert.Equal(FeedbackFormat.UnpairedPreferences, unpaired.Format);
        Assert.Equal(new[] { true, false }, unpaired.Examples.Select(e => e.Label));
    }

    [Theory]
    [InlineData("\"yes\"", "string")]
    [InlineData("1", "number")]
    [InlineData("null", "null")]
    public void NonBooleanLabelsAreErrors(string label, string kind)
    {
        using var dir = TestPaths.NewTempDir();
        string path = Path.Combine(dir.Path, "fb.jsonl");
        File.WriteAllText(path, "{\"prompt\":\"Q\",\"completion\":\"a\",\"label\":true}\n{\"prompt\":\"Q\",\"completion\":\"a\",\"label\":" + label + "}\n");
        var e = Assert.Throws<DataFormatException>(() => FeedbackDataset.Load(path, Tok, Enc));
        Assert.Contains("fb.jsonl:2: field 'label'", e.Message);
        Assert.Contains("expected a boolean", e.Message);
        Assert.Contains(kind, e.Message);
    }

    [Fact]
    public void MixedFeedbackLayoutsAreAnError()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir, new { prompt = "Q", completion = " good", label = true }, new { prompt = "Q", chosen = " a", rejected = " b" });
        var e = Assert.Throws<DataFormatException>(() => FeedbackDataset.Load(path, Tok, Enc));
        Assert.Contains("data.jsonl:2:", e.Message);
        Assert.Contains("one file must use one format", e.Message);
    }
}
