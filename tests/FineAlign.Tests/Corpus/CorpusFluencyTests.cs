using FineAlign.Data.Corpus;

namespace FineAlign.Tests.Corpus;

public class CorpusFluencyTests
{
    [Fact]
    public void EveryGeneratedReviewAndRevisionIsWellFormedAndMadeOfCorpusWords()
    {
        foreach (var r in ReviewCorpus.Generate(1234, 3000))
        {
            foreach (var text in new[] { r.Text, ReviewCorpus.Revise(r, true).Revised.Text, ReviewCorpus.Revise(r, false).Revised.Text })
            {
                var f = CorpusFluency.Score("", text);
                Assert.True(f.WellFormed, text);
                Assert.True(f.CorpusWordShare == 1.0, string.Join(",", Lexicon.Annotate(text).Select(w => w.Word).Where(w => !CorpusFluency.IsCorpusWord(w))));
            }
            Assert.True(CorpusFluency.Score(r.Prompt, r.Completion).WellFormed);
        }
    }

    [Fact]
    public void AGrammaticalReviewScoresOneAndAGarbageWordLowersTheShare()
    {
        var good = CorpusFluency.Score("The film was", " brilliant. I really loved the plot. Rating: 5/5.");
        Assert.Equal(new FluencyScore(7, 7, true), good);
        Assert.Equal(1.0, good.CorpusWordShare);

        // One garbage word among seven: 6/7 known, and the sentence is no longer one the grammar writes.
        var garbage = CorpusFluency.Score("The film was", " brilliamt. I really loved the plot. Rating: 5/5.");
        Assert.Equal(6.0 / 7, garbage.CorpusWordShare, 10);
        Assert.False(garbage.WellFormed);

        // Known words in an order the grammar never writes: every word counts, the response is not well-formed.
        var scrambled = CorpusFluency.Score("The film was", " plot the loved brilliant.");
        Assert.Equal(1.0, scrambled.CorpusWordShare);
        Assert.False(scrambled.WellFormed);

        // Cut mid-sentence (the byte tokenizer's "I would very recomm"): not well-formed, and "recomm" is not a word.
        var cut = CorpusFluency.Score("The film was", " good. I would very recomm");
        Assert.False(cut.WellFormed);
        Assert.Equal(4.0 / 5, cut.CorpusWordShare, 10);
        Assert.False(CorpusFluency.Score("The film was", "").WellFormed);   // the prompt alone is unfinished
    }

    [Fact]
    public void VocabularyHoldsTemplateAndListWordsButNotGarbage()
    {
        foreach (var w in new[] { "watched", "cinema", "masterpiece", "thankfully", "wouldn't", "finish", "overall", "rating" })
            Assert.True(CorpusFluency.IsCorpusWord(w), w);
        foreach (var w in new[] { "recomm", "brilliamt", "xyz", "banana" })
            Assert.False(CorpusFluency.IsCorpusWord(w), w);
    }
}
