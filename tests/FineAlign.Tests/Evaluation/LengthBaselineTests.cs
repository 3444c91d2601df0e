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
        Assert.Equal(0.625, b.BestWithCoinTies, 12);   // the tie is won half the time
    }
}

public class LengthControlledTests
{
    private static EncodedPair Pair(int chosen, int rejected) =>
        new(1, new EncodedSequence([1], new int[chosen], new bool[chosen]), new EncodedSequence([1], new int[rejected], new bool[rejected]), 0);

    [Fact]
    public void SimilarLengthSubsetAndStrataAreCountedByHand()
    {
        // lengths (chosen, rejected) and whether the scorer got the pair right:
        // (10,11) similar, chosen shorter, right; (20,20) similar, equal, wrong; (5,9) chosen shorter, right;
        // (9,3) chosen longer, wrong; (30,28) similar, chosen longer, right.
        EncodedPair[] pairs = [Pair(10, 11), Pair(20, 20), Pair(5, 9), Pair(9, 3), Pair(30, 28)];
        var acc = new PreferenceAccuracy(5, 0.6, 0, 0, 0) { Correct = [true, false, true, false, true] };
        var lc = PreferenceEval.LengthControl(pairs, acc, similarWithin: 0.1);
        Assert.Equal(3, lc.SimilarPairs);
        Assert.Equal(2.0 / 3, lc.Similar, 12);
        Assert.Equal(1.0 / 3, lc.SimilarShorterWins, 12);
        Assert.Equal(2, lc.ShorterChosenPairs);
        Assert.Equal(1.0, lc.ShorterChosen);
        Assert.Equal(2, lc.LongerChosenPairs);
        Assert.Equal(0.5, lc.LongerChosen, 12);
        Assert.Equal(1, lc.EqualPairs);
        Assert.Equal(0.0, lc.Equal);
        Assert.Equal(0.75, lc.Balanced, 12);
    }

    [Fact]
    public void ALengthOnlyRuleScoresHalfOnTheBalancedAccuracy()
    {
        EncodedPair[] pairs = [Pair(3, 5), Pair(1, 2), Pair(6, 4), Pair(2, 2), Pair(7, 9), Pair(4, 4)];
        var shorterWins = pairs.Select(p => p.Chosen.Completion.Length < p.Rejected.Completion.Length).ToArray();
        var acc = new PreferenceAccuracy(6, shorterWins.Count(x => x) / 6.0, 0, 0, 0) { Correct = shorterWins };
        Assert.Equal(0.5, PreferenceEval.LengthControl(pairs, acc).Balanced, 12);
        // A rule that prefers the shorter reply and gets every length tie right still scores 50%: ties are not in it.
        bool[] tiesRight = [true, true, false, true, true, true];
        Assert.Equal(0.5, PreferenceEval.LengthControl(pairs, acc with { Correct = tiesRight }).Balanced, 12);
    }

    [Fact]
    public void ResultsForOtherPairsAreRejected()
    {
        var acc = new PreferenceAccuracy(1, 1, 0, 0, 0) { Correct = [true] };
        Assert.Throws<ArgumentException>(() => PreferenceEval.LengthControl([Pair(1, 2), Pair(2, 1)], acc));
    }
}
