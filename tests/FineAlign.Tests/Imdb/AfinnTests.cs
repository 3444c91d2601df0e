using FineAlign.Rewards;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Imdb;

/// <summary>The AFINN lexicon: matching, scores and the TLCR token-label spans, on hand-made text.</summary>
public class AfinnTests
{
    private static readonly AfinnLexicon Lexicon = AfinnLexicon.From(new Dictionary<string, int>
    {
        ["good"] = 3, ["bad"] = -3, ["great"] = 3, ["boring"] = -3, ["can't stand"] = -3, ["well-being"] = 2, ["stand"] = 1,
    });

    [Fact]
    public void ScoreSumsValencesCaseInsensitivelyWithPhrasesBeforeWords()
    {
        Assert.Equal(3 + 3 - 3, Lexicon.Score("GOOD acting, Great plot, bad ending."));
        // "can't stand" is one phrase (−3), not "stand" (+1); "well-being" a hyphenated word.
        Assert.Equal(-3 + 2, Lexicon.Score("I can't stand it, for my well-being."));
        Assert.Equal(1, Lexicon.Score("They stand."));
        Assert.Equal(0, Lexicon.Score("goodness badly"));   // whole words only
        var m = Lexicon.Matches("so boring");
        Assert.Equal([new LexiconMatch(3, 9, -3)], m);
    }

    [Fact]
    public void SpansLabelOnlyWordsWhoseValenceAgreesWithTheReview()
    {
        const string text = "great cast but a bad script";
        // Positive review: "great" +1, "bad" contradicts the label and stays neutral.
        Assert.Equal([new LabelSpan(0, 5, 1)], Lexicon.Spans(text, positive: true));
        Assert.Equal([new LabelSpan(17, 20, -1)], Lexicon.Spans(text, positive: false));
    }

    [Fact]
    public void LoadReadsTheTabFormatAndNamesTheBadLine()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Path.Combine(dir.Path, "afinn.txt");
        File.WriteAllLines(path, ["good\t3", "can't stand\t-3"]);
        var lex = AfinnLexicon.Load(path);
        Assert.Equal(2, lex.Count);
        Assert.Equal(0, lex.Score("good, but I can't stand it"));
        File.WriteAllLines(path, ["good\t3", "bad -3"]);
        var e = Assert.Throws<FineAlignException>(() => AfinnLexicon.Load(path));
        Assert.StartsWith(path + ":2: ", e.Message);
    }

    [Fact]
    public void TheSharedLexiconScoresARealSentence()
    {
        var lex = AfinnLexicon.Load(TestPaths.RequireShared("data/afinn/AFINN-en-165.txt"));
        Assert.Equal(3382, lex.Count);
        // AFINN-165: good +3, excellent +3, bad −3; no other word of the sentence is in it.
        Assert.Equal(3 + 3 - 3, lex.Score("A good film with an excellent cast and a bad ending."));
    }

    [Fact]
    public void KnownWordsShareCountsWordsOfTheReferenceText()
    {
        var vocabulary = new HashSet<string> { "the", "film", "was", "fun" };
        Assert.Equal(0.75, KnownWordsReward.Share("The film was zxqv!", vocabulary));
        Assert.Equal(0, KnownWordsReward.Share("...", vocabulary));
    }
}
