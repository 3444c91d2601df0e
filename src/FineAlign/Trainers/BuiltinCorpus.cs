using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Text;

namespace FineAlign.Trainers;

/// <summary>
/// The built-in default data: reviews from <see cref="ReviewCorpus"/> (deterministic from the seed), as SFT
/// prompt/completion pairs or pretraining documents, split by held-out prompts.
/// </summary>
public static class BuiltinCorpus
{
    public const string Name = "<built-in corpus>";

    /// <summary>Prompt = review opening, completion = the rest; eval = reviews whose opening is held out.</summary>
    public static (List<SftExample> Train, List<SftExample> Eval) SftExamples(int seed, int count, double evalFraction = 0.1)
    {
        var train = new List<SftExample>();
        var eval = new List<SftExample>();
        foreach (var r in ReviewCorpus.Generate(seed, count))
        {
            var ex = new PromptCompletionExample(r.Index + 1, r.Prompt, r.Completion);
            (ReviewCorpus.IsEvalPrompt(r.Prompt, seed, evalFraction) ? eval : train).Add(ex);
        }
        return (train, eval);
    }

    /// <summary>Whole reviews as documents, packed into blocks of <paramref name="contextLength"/> tokens.</summary>
    public static (List<TokenizedExample> Train, List<TokenizedExample> Eval) PretrainBlocks(TextTokenizer tokenizer, int seed, int count, int contextLength, double evalFraction = 0.1)
    {
        var train = new List<TokenizedExample>();
        var eval = new List<TokenizedExample>();
        foreach (var r in ReviewCorpus.Generate(seed, count))
            (ReviewCorpus.IsEvalPrompt(r.Prompt, seed, evalFraction) ? eval : train).Add(PretrainCorpus.EncodeDocument(tokenizer, r.Text));
        int eos = tokenizer.EosId ?? throw new FineAlignException("the tokenizer has no EOS token to separate packed documents.");
        return (Packing.Pack(train, contextLength, eos), Packing.Pack(eval, contextLength, eos));
    }
}
