using FineAlign.Data.Corpus;

namespace FineAlign.Tests.Corpus;

public class CorpusRandomTests
{
    [Fact]
    public void Streams_are_reproducible_uniform_and_independent()
    {
        var a = new CorpusRandom(42);
        var b = new CorpusRandom(42);
        for (int i = 0; i < 100; i++) Assert.Equal(a.NextUInt64(), b.NextUInt64());

        var r = CorpusRandom.ForItem(1, 0);
        var counts = new int[5];
        double sum = 0, sumSq = 0;
        for (int i = 0; i < 50_000; i++)
        {
            counts[r.Next(5)]++;
            double g = r.NextGaussian();
            sum += g; sumSq += g * g;
        }
        Assert.All(counts, c => Assert.InRange(c, 9_500, 10_500));
        Assert.InRange(sum / 50_000, -0.03, 0.03);
        Assert.InRange(sumSq / 50_000, 0.95, 1.05);
        Assert.NotEqual(CorpusRandom.ForItem(1, 0).NextUInt64(), CorpusRandom.ForItem(1, 1).NextUInt64());
        Assert.NotEqual(CorpusRandom.ForItem(1, 0).NextUInt64(), CorpusRandom.ForItem(2, 0).NextUInt64());
    }
}
