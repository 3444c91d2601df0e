using FineAlign.Data.Corpus;
using System.Globalization;
using System.Text.Json;
using FineAlign.Data;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign eval-pref</c>: implicit-reward (or log-likelihood) preference accuracy of a policy on held-out pairs.</summary>
public static class EvalPrefCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("eval-pref",
            "Preference accuracy of a policy's implicit reward β·(log π(y|x) − log π_ref(y|x)) on held-out pairs (e.g. a DPO output against its " +
            "SFT reference); chance is 50%, ties count as wrong. Without --ref-model: the reference-free log-likelihood comparison. " +
            "Without --data: the built-in held-out review pairs.");
        var model = cmd.Declare<string?>("--model", null, "Policy folder (e.g. runs/dpo/model).");
        var refModel = cmd.Declare<string?>("--ref-model", null, "Reference folder (e.g. runs/sft/model); omitted: compare log π(chosen) with log π(rejected).");
        var beta = cmd.Declare("--beta", 0.1, "β of the implicit reward (scales margins only, not accuracy).", check: v => v > 0 ? null : "must be positive");
        var data = PreferenceFlags.Declare(cmd, feedback: false, evalData: false);
        var batch = cmd.Declare("--batch-size", 32, "Pairs per forward.", check: v => v >= 1 ? null : "must be at least 1");
        var output = cmd.Declare<string?>("--output", null, "Also write the result as JSON to this file.");
        var runtime = RuntimeFlags.Declare(cmd);
        cmd.SetRecipeAction((r, ct) =>
        {
            runtime.Apply(r);
            string dir = r.Get(model) ?? throw new FineAlignException("eval-pref needs --model: a policy folder (e.g. runs/dpo/model).");
            string resolved = ModelFolder.Resolve(dir);
            using var policy = ModelIO.Load(resolved);
            var tokenizer = TokenizerLoader.Load(resolved);
            var pairs = HeldOut(r, data, tokenizer, policy.Config.MaxPositionEmbeddings, ModelIO.TokenizerFolder(resolved));
            using var reference = PreferenceFlags.LoadReference(r.Get(refModel), policy);
            var acc = reference is null
                ? PreferenceEval.LogLikelihood(policy, pairs.Pairs, tokenizer.PaddingId, r.Get(batch))
                : PreferenceEval.ImplicitReward(policy, reference, pairs.Pairs, tokenizer.PaddingId, r.Get(beta), r.Get(batch));
            return Report(r, "eval-pref", pairs, acc, r.Get(output), reference is null ? "log-likelihood" : "implicit reward");
        });
        return cmd;
    }

    /// <summary>--data, or the built-in held-out pairs.</summary>
    internal static PreferenceDataset HeldOut(Recipe r, PreferenceFlags data, TextTokenizer tokenizer, int context, string? modelFolder)
    {
        var enc = data.Encoding(r, context, modelFolder);
        Action<string> warn = m => r.Error.WriteLine("warning: " + m);
        var folds = data.FoldChoice(r);   // checked first: --folds without --data is an error, not ignored
        if (r.Get(data.Data) is string path)
        {
            var all = PreferenceDataset.Load(path, tokenizer, enc, warn);
            if (folds is not null)
                return all with { Source = folds.Describe(path), Pairs = KFold.Split(all.Pairs, p => p.Line, path, folds, "pairs").Test };
            if (r.Get(data.HoldoutLast) is not (int n and > 0)) return all;
            long cut = PreferenceFlags.HoldoutStart(path, n);
            return all with { Source = $"{path} (last {n} lines)", Pairs = all.Pairs.Where(p => p.Line > cut).ToList() };
        }
        var (_, eval) = BuiltinData.PreferencePairs(r.Get(data.CorpusSeed), r.Get(data.CorpusSize));
        return PreferenceDataset.FromExamples(eval, BuiltinData.Name + " (held out)", tokenizer, enc, warn);
    }

    internal static int Report(Recipe r, string command, PreferenceDataset pairs, PreferenceAccuracy acc, string? output, string what)
    {
        var inv = CultureInfo.InvariantCulture;
        r.Out.WriteLine(string.Create(inv,
            $"{command}: {what} accuracy {acc.Accuracy:P1} ± {acc.ConfidenceHalfWidth:P1} (95%) on {acc.Pairs} pairs of {pairs.Source} (chance 50%); " +
            $"mean margin {acc.MeanMargin:F4} (chosen {acc.MeanChosen:F4}, rejected {acc.MeanRejected:F4})"));
        var length = PreferenceEval.Length(pairs.Pairs);
        r.Out.WriteLine(string.Create(inv,
            $"{command}: length baseline on the same pairs: the shorter reply wins {length.ShorterWins:P1}, the longer reply wins {length.LongerWins:P1} " +
            $"(equal length {length.Ties:P1}; the better rule with ties decided by a coin: {length.BestWithCoinTies:P1}); " +
            $"the {what} beats that by {acc.Accuracy - length.BestWithCoinTies:+0.0%;-0.0%;0.0%}"));
        var lc = PreferenceEval.LengthControl(pairs.Pairs, acc);
        string Pct(double v) => double.IsNaN(v) ? "n/a" : v.ToString("P1", inv);
        r.Out.WriteLine(string.Create(inv,
            $"{command}: length-controlled: on the {lc.SimilarPairs} pairs whose replies differ in length by ≤ {lc.SimilarWithin:P0} the {what} scores " +
            $"{Pct(lc.Similar)} ± {Pct(lc.SimilarHalfWidth)} (shorter wins there {Pct(lc.SimilarShorterWins)}); length-balanced (mean over the " +
            $"{lc.ShorterChosenPairs} chosen-shorter pairs, {Pct(lc.ShorterChosen)}, and the {lc.LongerChosenPairs} chosen-longer, {Pct(lc.LongerChosen)}; " +
            $"a length-only rule scores 50%): {Pct(lc.Balanced)} ± {Pct(lc.BalancedHalfWidth)}; {lc.EqualPairs} equal-length pairs: {Pct(lc.Equal)}"));
        if (output is not null)
        {
            var json = new Dictionary<string, object?>
            {
                ["data"] = pairs.Source, ["score"] = what, ["pairs"] = acc.Pairs, ["accuracy"] = acc.Accuracy, ["accuracy_ci95"] = acc.ConfidenceHalfWidth,
                ["mean_margin"] = acc.MeanMargin, ["mean_chosen"] = acc.MeanChosen, ["mean_rejected"] = acc.MeanRejected,
                ["length_shorter_wins"] = length.ShorterWins, ["length_longer_wins"] = length.LongerWins,
                ["length_best_coin_ties"] = length.BestWithCoinTies,
                ["similar_length_within"] = lc.SimilarWithin, ["similar_length_pairs"] = lc.SimilarPairs,
                ["similar_length_accuracy"] = Json(lc.Similar), ["similar_length_shorter_wins"] = Json(lc.SimilarShorterWins),
                ["shorter_chosen_pairs"] = lc.ShorterChosenPairs, ["shorter_chosen_accuracy"] = Json(lc.ShorterChosen),
                ["longer_chosen_pairs"] = lc.LongerChosenPairs, ["longer_chosen_accuracy"] = Json(lc.LongerChosen),
                ["equal_length_pairs"] = lc.EqualPairs, ["equal_length_accuracy"] = Json(lc.Equal),
                ["length_balanced_accuracy"] = Json(lc.Balanced), ["length_balanced_ci95"] = Json(lc.BalancedHalfWidth),
            };
            File.WriteAllText(output, JsonSerializer.Serialize(json, new JsonSerializerOptions { WriteIndented = true }));
        }
        return 0;
    }

    // JSON has no NaN: an empty subset is written as null.
    private static object? Json(double v) => double.IsNaN(v) ? null : v;
}
