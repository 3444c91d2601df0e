using FineAlign.Data;
using FineAlign.Evaluation;

namespace FineAlign.Tests.Evaluation;

public class LengthBaselineTests
{
    private static EncodedPair Pair(int chosen, int rejected) =>
        new(1, new EncodedSequence([1], new int[chosen], new bool[chosen]), new EncodedSequence([1], new int[rejected], new bool[rejected]), 0);

    [Fact]
    public void ShorterAndLongerWinsCountStrictlyAndTiesCountForNeither()
    {
        // chosen shorter ×2, longer ×1, equal ×1.
        var b = PreferenceEval.Length([Pair(3, 5), Pair(1, 2), Pair(6, 4), Pair(2, 2)]);
        Assert.Equal(0.5, b.ShorterWins);
        Assert.Equal(0.25, b.LongerWins);
        Assert.Equal(0.25, b.Ties, 12);
        Assert.Equal(0.5, b.Best);
    }
}
