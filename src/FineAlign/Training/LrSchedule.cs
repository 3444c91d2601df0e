namespace FineAlign.Training;

/// <summary>
/// Learning-rate schedules as pure functions of the step, matching transformers'
/// get_{constant,linear,cosine}_schedule_with_warmup: the update with 0-based index
/// <c>step</c> uses <c>lr × Factor(step)</c>; warmup rises linearly from 0.
/// </summary>
public static class LrSchedule
{
    public static double Factor(LrSchedulerType type, long step, long warmupSteps, long totalSteps)
    {
        if (step < warmupSteps) return (double)step / Math.Max(1, warmupSteps);
        double decaySteps = Math.Max(1, totalSteps - warmupSteps);
        double progress = (step - warmupSteps) / decaySteps;
        return type switch
        {
            LrSchedulerType.Constant => 1.0,
            LrSchedulerType.Linear => Math.Max(0.0, 1.0 - progress),
            // Loshchilov & Hutter 2017 (SGDR), half a cosine period from 1 to 0.
            LrSchedulerType.Cosine => Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * progress))),
            _ => throw new ArgumentOutOfRangeException(nameof(type)),
        };
    }

    /// <summary>The learning rate for the update with 0-based index <paramref name="step"/>.</summary>
    public static double LearningRate(TrainingOptions o, long step, long totalSteps)
        => o.LearningRate * Factor(o.LrSchedulerType, step, o.WarmupStepsFor(totalSteps), totalSteps);
}
