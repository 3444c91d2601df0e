using FineAlign.Data;
using FineAlign.Rewards;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign imdb-prepare</c>: the data stage of the IMDB positive-continuation task (<c>demo --task imdb</c>): splits
/// labelled reviews by review with a fixed seed into train / validation / test / judge and writes the prompt, text,
/// classifier, offline and TLCR-span files the other stages read (docs/IMDB.md).
/// </summary>
public static class ImdbPrepareCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("imdb-prepare",
            "Split an IMDB-format review file ({\"text\", \"label\": 0|1} per line) by review, with a fixed seed, into train / validation / test and a " +
            "disjoint judge part (for a held-out judge classifier no aligned method sees), and write the task's files into --out: texts for the " +
            "tokenizer and pretraining, prefix + continuation + label for rm --objective classification, prompts (review prefixes) for ppo and " +
            "evaluation, prefix + human continuation for alol, and (with --afinn) AFINN-labelled spans for tlcr-label. split.json lists the " +
            "source lines of every part.");
        var data = cmd.Declare("--data", "../shared/data/imdb/imdb-9k.jsonl", "IMDB-format JSONL: 'text' and 'label' (0 = negative, 1 = positive) on every line.");
        var afinn = cmd.Declare<string?>("--afinn", null, "AFINN lexicon (word<TAB>score) for the TLCR token labels; omitted: no tlcr-* files.");
        var outDir = cmd.Declare("--out", "runs/imdb/data", "Output folder.", alias: "-o");
        var seed = cmd.Declare("--seed", 42, "Seed of the split and of the prefix lengths: same file and seed, same files.");
        var maxReviews = cmd.Declare("--max-reviews", 0, "Use only the first N reviews (0 = all).", check: v => v >= 0 ? null : "must be ≥ 0");
        var minWords = cmd.Declare("--min-prefix-words", 3, "Shortest prompt (words of the review's start).", check: v => v >= 1 ? null : "must be at least 1");
        var maxWords = cmd.Declare("--max-prefix-words", 8, "Longest prompt (words).", check: v => v >= 1 ? null : "must be at least 1");
        var contWords = cmd.Declare("--continuation-words", 40, "Words of the continuation kept in the classifier, TLCR and offline files.", check: v => v >= 1 ? null : "must be at least 1");
        var val = cmd.Declare("--validation-fraction", 0.05, "Share of reviews in the validation part.");
        var test = cmd.Declare("--test-fraction", 0.15, "Share of reviews in the test part (evaluation prompts, classifier accuracy).");
        var judge = cmd.Declare("--judge-fraction", 0.25, "Share of reviews in the judge part (only the held-out judge trains on it).");
        cmd.SetRecipeAction((r, ct) =>
        {
            if (r.Get(minWords) > r.Get(maxWords)) throw new FineAlignException($"--min-prefix-words {r.Get(minWords)} exceeds --max-prefix-words {r.Get(maxWords)}");
            var lexicon = r.Get(afinn) is string a ? AfinnLexicon.Load(a) : null;
            var options = new ImdbTaskOptions
            {
                Seed = r.Get(seed), MaxReviews = r.Get(maxReviews), MinPrefixWords = r.Get(minWords), MaxPrefixWords = r.Get(maxWords),
                ContinuationWords = r.Get(contWords), ValidationFraction = r.Get(val), TestFraction = r.Get(test), JudgeFraction = r.Get(judge),
            };
            var m = ImdbTaskFiles.Write(r.Get(data), r.Get(outDir), options,
                lexicon is null ? null : (text, positive) => lexicon.Spans(text, positive).Select(s => (s.Start, s.End, s.Label)));
            var s = m.Split;
            string Pos(IReadOnlyList<LabelledReview> p) => $"{p.Count} ({p.Count(x => x.Positive)} positive)";
            r.Out.WriteLine($"imdb-prepare: {r.Get(data)}: train {Pos(s.Train)}, validation {Pos(s.Validation)}, test {Pos(s.Test)}, judge {Pos(s.Judge)} reviews (seed {options.Seed})");
            r.Out.WriteLine($"imdb-prepare: wrote {string.Join(", ", m.Files.Keys)} into {r.Get(outDir)}");
            return 0;
        });
        return cmd;
    }
}
