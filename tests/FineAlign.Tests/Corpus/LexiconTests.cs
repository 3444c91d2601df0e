using FineAlign.Data.Corpus;

namespace FineAlign.Tests.Corpus;

public class LexiconTests
{
    private const float Tol = 1e-6f;

    [Fact]
    public void Lexicon_has_a_few_hundred_words_with_symmetric_opposite_antonyms()
    {
        Assert.InRange(Lexicon.Entries.Count, 250, 1000);
        Assert.Equal(Lexicon.Entries.Count, Lexicon.Entries.Select(e => e.Word).Distinct().Count());
        foreach (var e in Lexicon.Entries)
        {
            Assert.InRange(e.Valence, -1f, 1f);
            Assert.Equal(e.Word, e.Word.ToLowerInvariant());
            if (e.Antonym is null) continue;
            var a = Lexicon.Find(e.Antonym)!;
            Assert.Equal(e.Word, a.Antonym);
            Assert.Equal(e.Class, a.Class);
            Assert.True(Math.Sign(e.Valence) == -Math.Sign(a.Valence) && e.Valence != 0, $"{e.Word}/{a.Word}");
        }
        Assert.Equal(1f, Lexicon.Valence("brilliant"));
        Assert.Equal(-0.8f, Lexicon.Valence("Dull"));
        Assert.Equal(0f, Lexicon.Valence("average"));
        Assert.Equal(0f, Lexicon.Valence("very"));       // modifiers carry no valence of their own
        Assert.Equal(0f, Lexicon.Valence("zorblax"));    // unknown
    }

    [Theory]
    // plain: mean over valenced words
    [InlineData("The plot was brilliant.", 1.0f)]
    [InlineData("The plot was brilliant and the acting was dull.", 0.1f)]          // (1 - 0.8) / 2
    // negation flips and halves: good 0.6 -> -0.3
    [InlineData("The plot was not good.", -0.3f)]
    [InlineData("It was not a bad film.", 0.35f)]                                   // bad -0.7 -> +0.35, across "a"
    [InlineData("I didn't enjoy the plot, but I loved the ending!", 0.275f)]        // (-0.35 + 0.9) / 2
    // modifiers multiply, then clamp to [-1, 1]; negation applies on top
    [InlineData("The plot was not very good.", -0.45f)]                             // 0.6 * 1.5 * -0.5
    [InlineData("The acting was very dull, but the music was not awful.", -0.25f)]  // (clamp(-1.2) + 0.5) / 2
    [InlineData("It was somewhat boring.", -0.4f)]                                  // -0.8 * 0.5
    [InlineData("Very the good.", 0.6f)]                                            // "the" resets the modifier
    // scope: negation ends at punctuation / "but"; two negators cancel
    [InlineData("Not. Good!", 0.6f)]
    [InlineData("Not but good", 0.6f)]
    [InlineData("not not good", 0.6f)]
    // case-insensitive; unknown words and digits are 0 and not counted; no valenced word -> 0
    [InlineData("BRILLIANT zorblax 5/5", 1.0f)]
    [InlineData("The film was a movie.", 0f)]
    [InlineData("", 0f)]
    public void TrueReward_matches_hand_worked_values(string text, float expected)
    {
        Assert.Equal(expected, Lexicon.TrueReward(text), Tol);
    }

    [Fact]
    public void Score_reports_sum_and_counts()
    {
        var s = Lexicon.Score("Brilliant and awful, I hated it.");
        Assert.Equal(-0.9f, s.Sum, Tol);        // 1 - 1 - 0.9
        Assert.Equal(3, s.ValencedWords);
        Assert.Equal(6, s.Words);               // brilliant and awful i hated it
        Assert.Equal(-0.3f, s.Mean, Tol);
    }

    [Fact]
    public void Annotate_spans_and_contractions()
    {
        const string text = "I didn't like it. Wasn't bad!";
        var words = Lexicon.Annotate(text);
        Assert.Equal(["i", "didn't", "like", "it", "wasn't", "bad"], words.Select(w => w.Word));
        foreach (var w in words) Assert.Equal(w.Word, text.Substring(w.Start, w.Length).ToLowerInvariant());
        var like = words[2];
        Assert.True(like.Negated && like.IsValenced);
        Assert.Equal(0.5f, like.LexiconValence, Tol);
        Assert.Equal(-0.25f, like.Valence, Tol);
        Assert.Equal(0.35f, words[5].Valence, Tol);
        Assert.False(words[4].IsValenced);
    }

    [Fact]
    public void Per_character_valence_sits_on_word_ends_and_sums_to_score()
    {
        const string text = "not good. great";
        float[] r = Lexicon.ValenceAtWordEnds(text);
        Assert.Equal(text.Length, r.Length);
        Assert.Equal(-0.3f, r[7], Tol);          // 'd' of good
        Assert.Equal(0.8f, r[14], Tol);          // 't' of great
        Assert.Equal(2, r.Count(v => v != 0));
        Assert.Equal(Lexicon.Score(text).Sum, r.Sum(), Tol);

        // UTF-8: "é" is two bytes, so "good" ends at byte 9 (c a f é é _ g o o d).
        float[] b = Lexicon.ValenceAtWordEndsUtf8("café good");
        Assert.Equal(10, b.Length);
        Assert.Equal(0.6f, b[9], Tol);
        Assert.Equal(0.6f, b.Sum(), Tol);
    }
}
