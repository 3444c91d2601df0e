using FineAlign.Evaluation;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Evaluation;

public class ReportTextTests
{
    [Fact]
    public void HtmlShowsSamplesAndNotesAsTextWithoutBackticksOrReplacementCharacters()
    {
        using var dir = TestPaths.NewTempDir();
        var settings = new EvalSettings(8, 1, 16, 7, 400, 1234, "runs/sft/model");
        RunEvaluation Run(string name, bool isBase) => new()
        {
            Name = name, Method = name, Settings = settings, IsBase = isBase,
            Curve = [new EvalPoint(0, 0.1, 0.01, 0, 0.5, 0.8, 30, -1.5, 0.98, 0.9, 0.12)],
            // A response cut inside a UTF-8 character decodes with a trailing U+FFFD.
            Samples = [new EvalSample("The film was", " great \uD83D\uDE00 caf\uFFFD", 0.5)],
        };
        ComparisonReport.Write([Run("sft", true), Run("dpo", false)], dir.Path,
            new ReportContext { Notes = ["Base: `small` Llama preset."] });
        string html = File.ReadAllText(Path.Combine(dir.Path, ComparisonReport.HtmlFile));
        Assert.DoesNotContain("`", html);
        Assert.DoesNotContain("\uFFFD", html);
        Assert.Contains("<code>small</code>", html);
        Assert.Contains("great &#128512; caf</td>", html);  // the emoji kept whole (one code point), the broken tail dropped
        Assert.Contains("98.0 %", html);                      // corpus words column on the built-in corpus
    }

    [Fact]
    public void ShownTextCutsAtCharacterBoundaries()
    {
        string s = new string('a', 9) + "\uD83D\uDE00" + "bbb";             // the emoji's halves at index 9 and 10
        Assert.Equal(new string('a', 9) + "…", ComparisonReport.ShownText(s, 10));   // not half an emoji
        Assert.Equal("abc", ComparisonReport.ShownText("abc\uFFFD\uFFFD", 10));
        Assert.Equal("abc", ComparisonReport.ShownText("abc", 10));
    }
}
