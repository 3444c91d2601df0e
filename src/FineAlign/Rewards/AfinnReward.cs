namespace FineAlign.Rewards;

/// <summary>
/// <c>--reward afinn:PATH</c>: the AFINN score (sum of word valences, <see cref="AfinnLexicon"/>) of the response
/// text, on its last token. A human-made lexicon no model trained on: the IMDB demo reports it beside the held-out judge.
/// </summary>
public static class AfinnReward
{
    public const string Kind = "afinn";

    public static RewardSource Build(string name, string lexiconPath)
    {
        if (lexiconPath.Length == 0) throw new FineAlignException("reward 'afinn' needs the lexicon file after ':', e.g. afinn:../shared/data/afinn/AFINN-en-165.txt");
        var lexicon = AfinnLexicon.Load(lexiconPath);
        return ProgrammaticRewardSource.Sequence(name, e => lexicon.Score(e.ResponseText
            ?? throw new FineAlignException($"reward source '{name}' needs response texts")));
    }
}
