using System.Globalization;
using System.Text.Json;
using FineAlign.Data;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign eval-rm</c>: preference accuracy of a reward model on held-out pairs.</summary>
public static class EvalRmCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("eval-rm",
            "Preference accuracy of a reward model (a folder written by 'finealign rm'): the share of pairs where r(chosen) > r(rejected); chance is 50%. " +
            "Without --data: the built-in held-out review pairs.");
        var model = cmd.Declare<string?>("--model", null, "Reward-model folder (Hugging Face XForSequenceClassification).");
        var data = PreferenceFlags.Declare(cmd, feedback: false, evalData: false);
        var batch = cmd.Declare("--batch-size", 32, "Pairs per forward.", check: v => v >= 1 ? null : "must be at least 1");
        var output = cmd.Declare<string?>("--output", null, "Also write the result as JSON to this file.");
        var runtime = RuntimeFlags.Declare(cmd);
        cmd.SetRecipeAction((r, ct) =>
        {
            runtime.Apply(r);
            string dir = r.Get(model) ?? throw new FineAlignException("eval-rm needs --model: a reward-model folder written by 'finealign rm' (e.g. runs/rm/model).");
            string resolved = ModelFolder.Resolve(dir);
            using var rm = ScoredLM.Load(resolved);
            var tokenizer = TokenizerLoader.Load(resolved);
            var pairs = EvalPrefCommand.HeldOut(r, data, tokenizer, rm.Config.MaxPositionEmbeddings, resolved);
            var acc = PreferenceEval.RewardModel(rm, pairs.Pairs, tokenizer.PaddingId, r.Get(batch));
            return EvalPrefCommand.Report(r, "eval-rm", pairs, acc, r.Get(output), "reward");
        });
        return cmd;
    }
}
