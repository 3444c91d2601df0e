using FineAlign.Objectives;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign kto</c>: Kahneman–Tversky Optimization on thumbs-up/down data.</summary>
public static class KtoCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("kto",
            "Kahneman–Tversky Optimization on unpaired binary feedback (prompt, completion, label), from --model (an SFT output). " +
            "The KL reference point comes from mismatched prompt/completion pairs in each batch (logged as 'kl'). " +
            "Without --data: the built-in review pairs, unpaired (chosen = thumbs-up).");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/kto", defaultLr: 1e-4, defaultMaxSteps: 200);
        var data = PreferenceFlags.Declare(cmd, feedback: true);
        var refModel = cmd.Declare<string?>("--ref-model", null, "Reference model folder (default: a frozen copy of --model).");
        var beta = cmd.Declare("--beta", KtoLoss.DefaultBeta, "β.", check: v => v > 0 ? null : "must be positive");
        var wd = cmd.Declare("--desirable-weight", 1.0, "λ_D: weight of thumbs-up losses.", check: v => v >= 0 ? null : "must be ≥ 0");
        var wu = cmd.Declare("--undesirable-weight", 1.0, "λ_U: weight of thumbs-down losses.", check: v => v >= 0 ? null : "must be ≥ 0");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Build(r);
            var (policy, tokenizer, description) = PreferenceFlags.RequirePolicy(r, flags, "kto");
            using var _ = policy;
            var (train, eval) = data.LoadFeedback(r, tokenizer, policy.Config.MaxPositionEmbeddings, flags.TemplateFolder(r));
            var reference = PreferenceFlags.LoadReference(r.Get(refModel), policy);
            r.Out.WriteLine($"kto: {description}; reference: {r.Get(refModel) ?? "the initial policy"}; β {r.Get(beta)}");
            r.Out.WriteLine($"kto: {PreferenceFlags.Describe(train)} for training, {(eval is null ? "no eval set" : eval.Examples.Count + " held out")}, output {options.OutputDir}");
            var kto = new KtoOptions { Beta = r.Get(beta), DesirableWeight = r.Get(wd), UndesirableWeight = r.Get(wu) };
            var result = CliProgress.Run(r.Out, progress => KtoTrainer.Train(policy, reference, tokenizer, train, eval, options, kto, progress, ct));
            return PreferenceReport.Finish(r, "kto", result, options,
                $"model saved to {Path.Combine(options.OutputDir, CausalLmTrainer.ModelFolder)} (Hugging Face format)",
                "kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected");
        });
        return cmd;
    }
}
