Console.WriteLine("finealign");
