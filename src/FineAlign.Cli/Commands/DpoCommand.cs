using FineAlign.Objectives;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign dpo</c>: Direct Preference Optimization and its variants.</summary>
public static class DpoCommand
{
    internal static readonly string[] Metrics =
        ["rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"];

    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("dpo",
            "Direct Preference Optimization (sigmoid, ipo, hinge, robust, conservative) on preference pairs, from --model (an SFT output). " +
            "The reference is --ref-model or the initial policy; --precompute-ref-log-probs scores it once (cached in --out) and frees it. " +
            "Metrics use TRL's names (rewards/accuracies, rewards/margins, ...). Without --data: the built-in review pairs.");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/dpo", defaultLr: 1e-4, defaultMaxSteps: 200);
        var data = PreferenceFlags.Declare(cmd, feedback: false);
        var refModel = cmd.Declare<string?>("--ref-model", null, "Reference model folder (default: a frozen copy of --model).");
        var beta = cmd.Declare("--beta", DpoLoss.DefaultBeta, "β: strength of the implicit KL penalty.", check: v => v > 0 ? null : "must be positive");
        var lossType = cmd.Declare("--loss-type", DpoLossType.Sigmoid, "sigmoid (DPO), ipo, hinge (SLiC), robust or conservative (label smoothing).");
        var smoothing = cmd.Declare("--label-smoothing", 0.0, "ε for the robust and conservative losses (the assumed share of flipped labels).");
        var precompute = cmd.Declare("--precompute-ref-log-probs", false, "Score the reference once before training, cache the log-probs in --out and free the reference model.");
        var sync = cmd.Declare("--sync-ref-model", false, "TR-DPO: every --ref-model-sync-steps set the reference to α·policy + (1−α)·reference.");
        var syncSteps = cmd.Declare("--ref-model-sync-steps", 512, "Steps between reference syncs (TR-DPO τ).", check: v => v >= 1 ? null : "must be at least 1");
        var mixup = cmd.Declare("--ref-model-mixup-alpha", 0.6, "TR-DPO α (1 = hard copy).", check: v => v is >= 0 and <= 1 ? null : "must be in [0, 1]");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Build(r);
            var dpo = new DpoOptions
            {
                Beta = r.Get(beta), LossType = r.Get(lossType), LabelSmoothing = r.Get(smoothing), PrecomputeReference = r.Get(precompute),
                SyncReference = r.Get(sync), RefModelSyncSteps = r.Get(syncSteps), RefModelMixupAlpha = r.Get(mixup),
            };
            dpo.Validate();
            if (dpo.SyncReference && r.Get(flags.Peft.UsePeft))
                throw new FineAlignException("--sync-ref-model moves the reference toward the policy; with --use-peft the reference is the base with the adapter off, so the two cannot be combined.");
            var (policy, tokenizer, description) = PreferenceFlags.RequirePolicy(r, flags, "dpo");
            using var _ = policy;
            var (train, eval) = data.LoadPairs(r, tokenizer, policy.Config.MaxPositionEmbeddings, flags.TemplateFolder(r));
            var reference = PreferenceFlags.LoadReference(r.Get(refModel), policy);
            r.Out.WriteLine($"dpo: {description}; reference: {r.Get(refModel) ?? "the initial policy"}; loss {dpo.LossType.ToString().ToLowerInvariant()}, β {dpo.Beta}");
            r.Out.WriteLine($"dpo: {PreferenceFlags.Describe(train)} for training, {(eval is null ? "no eval set" : eval.Pairs.Count + " held out")}, output {options.OutputDir}");
            var result = CliProgress.Run(r.Out, progress => DpoTrainer.Train(policy, reference, tokenizer, train, eval, options, dpo, progress,
                m => r.Out.WriteLine("dpo: " + m), ct));
            return PreferenceReport.Finish(r, "dpo", result, options,
                $"model saved to {Path.Combine(options.OutputDir, CausalLmTrainer.ModelFolder)} (Hugging Face format)", Metrics);
        });
        return cmd;
    }
}
