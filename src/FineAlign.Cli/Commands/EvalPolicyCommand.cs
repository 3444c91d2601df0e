namespace FineAlign.Cli.Commands;

public static class EvalPolicyCommand
{
    public static System.CommandLine.Command Create() => new("eval-policy", "placeholder");
}
