using FineAlign.Cli;

namespace FineAlign.Tests.Cli;

public class ProgressTests
{
    [Fact]
    public void Plain_progress_logs_stage_step_loss_and_eta()
    {
        var w = new StringWriter { NewLine = "\n" };
        var p = new PlainProgress(w, TimeSpan.Zero);
        p.Report(new ProgressUpdate("train", 0, 4));
        Thread.Sleep(5);
        p.Report(new ProgressUpdate("train", 1, 4, Loss: 0.5));
        p.Report(new ProgressUpdate("train", 4, 4, Loss: 0.25, Metrics: new Dictionary<string, double> { ["kl"] = 0.125 }));
        var lines = CliRunner.Lines(w.ToString());
        Assert.Equal(3, lines.Length);
        Assert.Matches(@"^\[\d\d:\d\d:\d\d\] train 0/4 \(0%\)$", lines[0]);
        Assert.Matches(@"^\[\d\d:\d\d:\d\d\] train 1/4 loss 0\.5000 \(25%\) eta \d\d:\d\d:\d\d$", lines[1]);
        Assert.Matches(@"^\[\d\d:\d\d:\d\d\] train 4/4 loss 0\.2500 kl 0\.125 \(100%\)$", lines[2]);
    }

    [Fact]
    public void Plain_progress_throttles_to_first_and_last_within_interval()
    {
        var w = new StringWriter();
        var p = new PlainProgress(w, TimeSpan.FromHours(1));
        for (int i = 0; i <= 100; i++) p.Report(new ProgressUpdate("gen", i, 100));
        p.Report(new ProgressUpdate("write", 1, 1));
        var lines = CliRunner.Lines(w.ToString().Replace("\r", ""));
        Assert.Equal(3, lines.Length);
        Assert.Contains("gen 0/100", lines[0]);
        Assert.Contains("gen 100/100", lines[1]);
        Assert.Contains("write 1/1", lines[2]);
    }

    [Fact]
    public void Redirected_output_uses_plain_lines()
    {
        var w = new StringWriter();
        Assert.False(CliProgress.IsInteractive(w));
        int result = CliProgress.Run(w, progress => { progress.Report(new ProgressUpdate("x", 1, 1)); return 42; });
        Assert.Equal(42, result);
        Assert.Contains("x 1/1 (100%)", w.ToString());
    }
}
